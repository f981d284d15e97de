# A DOKS cluster in its own VPC, and tally installed into it with the chart.
#   export DIGITALOCEAN_TOKEN=...           # API token (read by the digitalocean provider)
#   terraform init -backend-config=backend.hcl
#   terraform apply -var-file=terraform.tfvars
# The helm provider is configured from the cluster this configuration creates. Terraform can do
# that in one apply, but if the cluster is ever replaced, apply in two steps:
#   terraform apply -target=module.cluster  then  terraform apply

provider "digitalocean" {}

module "cluster" {
  source = "../../modules/doks-cluster"

  name                 = var.cluster_name
  region               = var.region
  min_nodes            = var.min_nodes
  max_nodes            = var.max_nodes
  node_size            = var.node_size
  registry_integration = var.registry_integration
}

provider "helm" {
  kubernetes = {
    host                   = module.cluster.endpoint
    token                  = module.cluster.token
    cluster_ca_certificate = base64decode(module.cluster.cluster_ca_certificate)
  }
}

module "tally" {
  source = "../../modules/tally-release"

  image_repository    = var.image_repository
  image_digest        = var.image_digest
  image_pull_secrets  = var.image_pull_secrets
  redis_anti_affinity = "hard"
  redis_storage_class = "do-block-storage"
  extra_values        = [file("${path.module}/values.yaml")]
}
