// Package idp is a real OpenID Connect provider that stands in for Keycloak in end-to-end tests of the
// token-exchange filter.
//
// It is built on github.com/zitadel/oidc/v3/pkg/op: an in-memory implementation of op's Storage
// interfaces (clients, users, signing key, token creation, RFC 8693 token exchange and client
// credentials) behind op's own token endpoint, discovery and JWKS handlers. A thin http.Handler in
// front of it gives the server Keycloak's URL layout and Keycloak's answers:
//
//	{URL}/realms/{realm}/.well-known/openid-configuration
//	{URL}/realms/{realm}/protocol/openid-connect/certs   (JWKS)
//	{URL}/realms/{realm}/protocol/openid-connect/token   (token exchange, client_credentials, password)
//
// with the issuer {URL}/realms/{realm}, where {URL} is http://127.0.0.1:<port>.
//
// The token endpoint imitates Keycloak's standard token exchange (V2): the checks, their order, the
// error codes, HTTP statuses and descriptions of KEYCLOAK.md, and the success shape
//
//	{"access_token","expires_in","refresh_expires_in":0,"token_type":"Bearer",
//	 "issued_token_type" (exchange only),"not-before-policy":0,"scope"}
//
// The front handler also counts and records every token request, and injects faults (latency,
// arbitrary status and body, closed or reset connections, garbage, silence, or a random Mix of
// them) on demand. Stop and Restart take the server down and bring it back on the same port.
//
// All tokens (password grant, token exchange, client credentials and MintUserToken) are RS256 JWTs
// created by op.CreateAccessToken with the one signing key of the IdP, published in the JWKS.
package idp
