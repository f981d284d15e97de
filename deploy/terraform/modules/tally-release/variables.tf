variable "release_name" {
  description = "Name of the Helm release (the prefix of every resource the chart creates)."
  type        = string
  default     = "tally"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,51}[a-z0-9])?$", var.release_name))
    error_message = "release_name: 1-53 lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the release."
  type        = string
  default     = "tally"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace: a DNS label, 1-63 lowercase letters, digits and dashes."
  }
}

variable "create_namespace" {
  description = "Create the namespace when it does not exist."
  type        = bool
  default     = true
}

variable "chart_path" {
  description = "Path of the chart; empty: deploy/helm/tally of this repository."
  type        = string
  default     = ""
}

variable "image_repository" {
  description = "Repository of the tally image, pullable by the cluster (e.g. registry.digitalocean.com/team/tally); no tag or digest."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$", var.image_repository))
    error_message = "image_repository: a repository such as registry.example.com/team/tally, without a tag or digest."
  }
}

variable "image_tag" {
  description = "Image tag; empty: the chart's appVersion. Ignored when image_digest is set."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$", var.image_tag))
    error_message = "image_tag: at most 128 letters, digits, underscores, dots and dashes, not starting with a dot or dash."
  }
}

variable "image_digest" {
  description = "Image digest (sha256:...); when set the pods run exactly this image."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^(sha256:[0-9a-f]{64})?$", var.image_digest))
    error_message = "image_digest: empty or sha256: followed by 64 lowercase hex digits."
  }
}

variable "image_pull_policy" {
  description = "Pull policy of the tally image."
  type        = string
  default     = "IfNotPresent"

  validation {
    condition     = contains(["Always", "IfNotPresent", "Never"], var.image_pull_policy)
    error_message = "image_pull_policy: Always, IfNotPresent or Never."
  }
}

variable "image_pull_secrets" {
  description = "Secrets the pods pull images with, e.g. [{ name = \"registry-team\" }]."
  type        = list(object({ name = string }))
  default     = []
}

variable "app_min_replicas" {
  description = "Fewest app pods (the HorizontalPodAutoscaler's minimum). At least 2, so one can be lost."
  type        = number
  default     = 3

  validation {
    condition     = var.app_min_replicas >= 2 && floor(var.app_min_replicas) == var.app_min_replicas
    error_message = "app_min_replicas: a whole number, 2 or more."
  }
}

variable "app_max_replicas" {
  description = "Most app pods the HorizontalPodAutoscaler may run."
  type        = number
  default     = 10

  validation {
    condition     = var.app_max_replicas >= var.app_min_replicas && floor(var.app_max_replicas) == var.app_max_replicas
    error_message = "app_max_replicas: a whole number, at least app_min_replicas."
  }
}

variable "service_type" {
  description = "Type of the app's Service: LoadBalancer (a cloud load balancer), NodePort or ClusterIP."
  type        = string
  default     = "LoadBalancer"

  validation {
    condition     = contains(["LoadBalancer", "NodePort", "ClusterIP"], var.service_type)
    error_message = "service_type: LoadBalancer, NodePort or ClusterIP."
  }
}

variable "redis_anti_affinity" {
  description = "Redis pods on distinct nodes: hard (required; needs 3 nodes) or soft (preferred)."
  type        = string
  default     = "hard"

  validation {
    condition     = contains(["hard", "soft"], var.redis_anti_affinity)
    error_message = "redis_anti_affinity: hard or soft."
  }
}

variable "redis_storage_class" {
  description = "StorageClass of the Redis volumes; empty: the cluster's default class."
  type        = string
  default     = ""
}

variable "redis_storage_size" {
  description = "Size of each Redis volume (a Kubernetes quantity, e.g. 1Gi)."
  type        = string
  default     = "1Gi"

  validation {
    condition     = can(regex("^[1-9][0-9]*(Mi|Gi|Ti)$", var.redis_storage_size))
    error_message = "redis_storage_size: a whole number of Mi, Gi or Ti, e.g. 1Gi."
  }
}

variable "extra_values" {
  description = "More values files (YAML text, e.g. file(\"values.yaml\")), merged after the module's values in order."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for doc in var.extra_values : can(yamldecode(doc))])
    error_message = "extra_values: every element must be a YAML document."
  }
}

variable "timeout_seconds" {
  description = "How long helm waits for the release's pods to be ready before it rolls back."
  type        = number
  default     = 600

  validation {
    condition     = var.timeout_seconds >= 60 && var.timeout_seconds <= 3600
    error_message = "timeout_seconds: from 60 to 3600."
  }
}
