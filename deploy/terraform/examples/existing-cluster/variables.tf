variable "kubeconfig_path" {
  description = "Path of the kubeconfig file (~ is expanded)."
  type        = string
  default     = "~/.kube/config"

  validation {
    condition     = length(trimspace(var.kubeconfig_path)) > 0
    error_message = "kubeconfig_path: the path of a kubeconfig file."
  }
}

variable "kube_context" {
  description = "Context of the kubeconfig to install into; empty: its current context."
  type        = string
  default     = ""
}

variable "release_name" {
  description = "Name of the Helm release."
  type        = string
  default     = "tally"
}

variable "namespace" {
  description = "Namespace of the release."
  type        = string
  default     = "tally"
}

variable "image_repository" {
  description = "Repository of the tally image that the cluster can pull (Artifact Registry, ECR, ...)."
  type        = string
}

variable "image_tag" {
  description = "Image tag; empty: the chart's appVersion."
  type        = string
  default     = ""
}

variable "image_digest" {
  description = "Image digest (sha256:...); preferred over the tag."
  type        = string
  default     = ""
}

variable "service_type" {
  description = "Type of the app's Service."
  type        = string
  default     = "LoadBalancer"
}

variable "redis_anti_affinity" {
  description = "hard needs at least three schedulable nodes; soft for smaller clusters."
  type        = string
  default     = "hard"
}
