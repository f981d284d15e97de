# Installs the tally chart (deploy/helm/tally) with helm_release into whatever cluster the caller's
# helm provider points at: a kubeconfig file and context (GKE, EKS, any cluster) or a DOKS
# cluster's endpoint and token. The module configures no provider itself.

locals {
  # The values this module sets, before extra_values. scripts/check-terraform.sh reads this map
  # (with the examples' inputs) and checks it against the chart's values.schema.json and
  # `helm lint --strict`, so keep it to literals and var.* references.
  chart_values = {
    image = {
      repository = var.image_repository
      tag        = var.image_tag
      digest     = var.image_digest
      pullPolicy = var.image_pull_policy
    }
    imagePullSecrets = var.image_pull_secrets
    replicaCount     = var.app_min_replicas
    autoscaling = {
      enabled     = true
      minReplicas = var.app_min_replicas
      maxReplicas = var.app_max_replicas
    }
    service = {
      type = var.service_type
    }
    redis = {
      antiAffinity = var.redis_anti_affinity
      persistence = {
        storageClass = var.redis_storage_class
        size         = var.redis_storage_size
      }
    }
  }

  chart = var.chart_path != "" ? var.chart_path : "${path.module}/../../../helm/tally"
}

resource "helm_release" "this" {
  name             = var.release_name
  namespace        = var.namespace
  create_namespace = var.create_namespace
  chart            = local.chart

  # Helm merges these in order: the module's values, then each extra_values document.
  values = concat([yamlencode(local.chart_values)], var.extra_values)

  # A failed install or upgrade is rolled back instead of left half-applied.
  atomic          = true
  cleanup_on_fail = true
  wait            = true
  timeout         = var.timeout_seconds
  max_history     = 10
}
