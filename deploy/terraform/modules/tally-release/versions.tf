terraform {
  # 1.9: a variable's validation may refer to other variables (max >= min replicas).
  required_version = ">= 1.9"

  required_providers {
    # 3.x: the provider's kubernetes settings are an attribute (kubernetes = { ... }).
    helm = {
      source  = "hashicorp/helm"
      version = "~> 3.0"
    }
  }
}
