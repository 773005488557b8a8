// Package configtest checks the deployment configurations shipped in envoy-config/: the Envoy
// bootstrap (envoy.yaml), the Istio resources (istio/) and the Keycloak realm (keycloak/). Each
// file is decoded into the real API types (go-control-plane, istio.io/api) with unknown fields as
// errors, every plugin configuration in them goes through the plugin's own parser, and the files
// are checked against each other: the plugin's cluster exists and points at the token endpoint,
// the realm has the clients the plugin names. The package has tests only.
package configtest
