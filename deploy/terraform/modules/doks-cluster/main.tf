# A DigitalOcean Kubernetes (DOKS) cluster in a VPC of its own, with one autoscaled node pool
# sized for the tally chart (the arithmetic is in deploy/terraform/README.md).

data "digitalocean_kubernetes_versions" "this" {
  version_prefix = var.kubernetes_version_prefix
}

resource "digitalocean_vpc" "this" {
  name        = "${var.name}-vpc"
  region      = var.region
  ip_range    = var.vpc_ip_range
  description = "Nodes of the Kubernetes cluster ${var.name}"
}

resource "digitalocean_kubernetes_cluster" "this" {
  name     = var.name
  region   = var.region
  version  = data.digitalocean_kubernetes_versions.this.latest_version
  vpc_uuid = digitalocean_vpc.this.id
  tags     = var.tags

  # A highly available control plane keeps the API up while DigitalOcean upgrades it.
  ha = var.ha_control_plane
  # Patch upgrades in the maintenance window; surge upgrades add new nodes before draining old
  # ones, so the Redis and app PodDisruptionBudgets never block a drain for long.
  auto_upgrade  = var.auto_upgrade
  surge_upgrade = true

  maintenance_policy {
    day        = var.maintenance_day
    start_time = var.maintenance_start_time
  }

  registry_integration = var.registry_integration

  node_pool {
    name       = "${var.name}-pool"
    size       = var.node_size
    auto_scale = true
    min_nodes  = var.min_nodes
    max_nodes  = var.max_nodes
    tags       = var.tags
    labels = {
      "tally.dev/pool" = "default"
    }
  }

  lifecycle {
    # The autoscaler changes the node count; Terraform must not fight it.
    ignore_changes = [node_pool[0].node_count]
  }
}
