// Package helm holds only tests: they render the Helm chart in
// deploy/helm/cwcreds with the helm binary and decode every object
// strictly into its Kubernetes API type. It is a module of its own so the
// product's go.mod does not carry the Kubernetes API.
package helm
