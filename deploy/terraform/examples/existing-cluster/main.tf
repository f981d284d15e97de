# tally installed into a cluster that exists already, reached through a kubeconfig:
#   GKE: gcloud container clusters get-credentials NAME --zone ZONE   (then kube_context =
#        "gke_PROJECT_ZONE_NAME"); EKS: aws eks update-kubeconfig --name NAME; DOKS: doctl
#        kubernetes cluster kubeconfig save NAME; or any other kubeconfig.
#   terraform init && terraform apply -var-file=terraform.tfvars
# State stays local here; copy the backend block of ../digitalocean to keep it in a bucket.

provider "helm" {
  kubernetes = {
    config_path    = pathexpand(var.kubeconfig_path)
    config_context = var.kube_context
  }
}

module "tally" {
  source = "../../modules/tally-release"

  release_name        = var.release_name
  namespace           = var.namespace
  image_repository    = var.image_repository
  image_tag           = var.image_tag
  image_digest        = var.image_digest
  service_type        = var.service_type
  redis_anti_affinity = var.redis_anti_affinity
}
