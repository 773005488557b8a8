// Package e2e holds the end-to-end scenario suite: the compiled filter (build/plugin.wasm) runs
// in an Envoy-faithful proxy-wasm host (e2e/host) in front of an echo upstream (e2e/upstream),
// exchanging real tokens at a real OIDC provider served at Keycloak's URL layout (e2e/idp). It
// imports nothing from filter/internal: it drives the compiled module only.
package e2e
