variable "name" {
  description = "Name of the cluster; also the prefix of its VPC and node pool."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.name))
    error_message = "name: 3-40 lowercase letters, digits and dashes, starting with a letter, not ending with a dash."
  }
}

variable "region" {
  description = "DigitalOcean region slug (e.g. fra1, nyc1, sfo3)."
  type        = string
  default     = "fra1"

  validation {
    condition     = can(regex("^[a-z]{3}[0-9]$", var.region))
    error_message = "region: a DigitalOcean region slug such as fra1 or nyc3."
  }
}

variable "kubernetes_version_prefix" {
  description = "Minor version to run, as a prefix (\"1.33.\"); the newest DOKS patch of it is used."
  type        = string
  default     = "1.33."

  validation {
    condition     = can(regex("^1\\.[0-9]{2}\\.$", var.kubernetes_version_prefix))
    error_message = "kubernetes_version_prefix: a minor version with a trailing dot, e.g. \"1.33.\"."
  }
}

variable "vpc_ip_range" {
  description = "Private IPv4 range of the VPC (RFC 1918, /16 to /24). Must not overlap the cluster's pod (10.244.0.0/16) and service (10.245.0.0/16) ranges or another VPC of the account."
  type        = string
  default     = "10.110.0.0/20"

  validation {
    condition = (
      can(cidrhost(var.vpc_ip_range, 0))
      && can(regex("^(10\\.|172\\.(1[6-9]|2[0-9]|3[01])\\.|192\\.168\\.)", var.vpc_ip_range))
      && tonumber(split("/", var.vpc_ip_range)[1]) >= 16
      && tonumber(split("/", var.vpc_ip_range)[1]) <= 24
    )
    error_message = "vpc_ip_range: an RFC 1918 CIDR from /16 to /24, e.g. 10.110.0.0/20."
  }

  validation {
    condition     = !can(regex("^10\\.24[45]\\.", var.vpc_ip_range))
    error_message = "vpc_ip_range: 10.244.0.0/16 and 10.245.0.0/16 are the cluster's pod and service ranges."
  }
}

variable "node_size" {
  description = "Droplet size of the nodes. The chart needs 2 vCPU / 4 GB nodes or larger (see the sizing in the README)."
  type        = string
  default     = "s-2vcpu-4gb"

  validation {
    condition     = can(regex("^[a-z0-9]+(-[a-z0-9]+)+$", var.node_size))
    error_message = "node_size: a Droplet size slug such as s-2vcpu-4gb."
  }

  validation {
    condition     = !contains(["s-1vcpu-512mb-10gb", "s-1vcpu-1gb", "s-1vcpu-2gb", "s-2vcpu-2gb"], var.node_size)
    error_message = "node_size: too small for the chart; use s-2vcpu-4gb or larger (README: node pool sizing)."
  }
}

variable "min_nodes" {
  description = "Fewest nodes of the autoscaled pool. At least 3: one Redis pod per node, so losing a node keeps a Sentinel majority."
  type        = number
  default     = 3

  validation {
    condition     = var.min_nodes >= 3 && floor(var.min_nodes) == var.min_nodes
    error_message = "min_nodes: a whole number, 3 or more (three Redis pods on three nodes)."
  }
}

variable "max_nodes" {
  description = "Most nodes the pool may grow to."
  type        = number
  default     = 5

  validation {
    condition     = var.max_nodes >= var.min_nodes && var.max_nodes <= 100 && floor(var.max_nodes) == var.max_nodes
    error_message = "max_nodes: a whole number from min_nodes to 100."
  }
}

variable "ha_control_plane" {
  description = "Run the control plane highly available (DigitalOcean charges for it)."
  type        = bool
  default     = true
}

variable "auto_upgrade" {
  description = "Let DigitalOcean apply Kubernetes patch releases in the maintenance window."
  type        = bool
  default     = true
}

variable "maintenance_day" {
  description = "Day of the weekly maintenance window (or any)."
  type        = string
  default     = "sunday"

  validation {
    condition     = contains(["any", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"], var.maintenance_day)
    error_message = "maintenance_day: any, or a weekday in lowercase (monday ... sunday)."
  }
}

variable "maintenance_start_time" {
  description = "Start of the maintenance window, UTC, HH:MM."
  type        = string
  default     = "04:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]$", var.maintenance_start_time))
    error_message = "maintenance_start_time: HH:MM in 24-hour UTC, e.g. 04:00."
  }
}

variable "registry_integration" {
  description = "Give the cluster pull access to the account's DigitalOcean Container Registry."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags of the cluster and its nodes."
  type        = list(string)
  default     = ["tally"]

  validation {
    condition     = alltrue([for tag in var.tags : can(regex("^[A-Za-z0-9:_.-]{1,255}$", tag))])
    error_message = "tags: letters, digits, colons, dashes, dots and underscores only."
  }
}
