variable "cluster_name" {
  description = "Name of the DOKS cluster."
  type        = string
  default     = "tally"
}

variable "region" {
  description = "DigitalOcean region of the cluster and its VPC."
  type        = string
  default     = "fra1"
}

variable "node_size" {
  description = "Droplet size of the nodes."
  type        = string
  default     = "s-2vcpu-4gb"
}

variable "min_nodes" {
  description = "Fewest nodes of the pool."
  type        = number
  default     = 3
}

variable "max_nodes" {
  description = "Most nodes of the pool."
  type        = number
  default     = 5
}

variable "registry_integration" {
  description = "Let the cluster pull from the account's DigitalOcean Container Registry."
  type        = bool
  default     = true
}

variable "image_repository" {
  description = "Repository of the tally image, e.g. registry.digitalocean.com/TEAM/tally."
  type        = string
}

variable "image_digest" {
  description = "Digest of the image to run (sha256:...), as printed by docker push."
  type        = string
}

variable "image_pull_secrets" {
  description = "Pull Secrets of the pods; with registry_integration DOKS creates registry-<registry name> in every namespace."
  type        = list(object({ name = string }))
  default     = []
}
