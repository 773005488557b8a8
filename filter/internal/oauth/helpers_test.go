package oauth

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// testNow is the clock the tests run at (milliseconds), so JWT lifetimes are exact.
const testNowMs = int64(1_760_000_000_000)

const testNowSec = testNowMs / 1000

// Strings that must never show up in anything this package prints. The secret is shaped like
// one Keycloak generates (32 alphanumerics).
const (
	testSecret  = "Zq3vT9wXk2LmN8pR4sY7bC1dF6gH0jKe"
	testOpaque  = "opaque-ZmFrZS1vcGFxdWUtdG9rZW4tdmFsdWU"
	testClient  = "token-exchange-filter"
	testAud     = "kagenti-api"
	testSubject = "sub-eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXN1YmplY3Q"
)

// makeJWT builds an RS256-shaped JWS with a Keycloak-like header and the given claims JSON. The
// signature is filler of the right length (256 bytes of RSA signature, 342 base64url chars).
func makeJWT(claims string) string {
	enc := base64.RawURLEncoding
	header := `{"alg":"RS256","typ":"JWT","kid":"Vx1xZ0nq3m5bJ2pQ8rT7uW4yA6cE9gI1kL3oN5sU7wY"}`
	sig := make([]byte, 256)
	for i := range sig {
		sig[i] = byte(i*7 + 3)
	}
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims)) + "." + enc.EncodeToString(sig)
}

// keycloakClaims is the payload of a Keycloak access token issued by standard token exchange.
func keycloakClaims(exp int64) string {
	return fmt.Sprintf(`{"exp":%d,"iat":%d,"jti":"onrtac:6c0f2f4e-3a59-4d6f-9b7e-1d2c3b4a5f60",`+
		`"iss":"https://kc.example.com/realms/demo","aud":"kagenti-api",`+
		`"sub":"0b6a7c4e-5d3f-4a2b-8c1d-9e8f7a6b5c4d","typ":"Bearer","azp":"token-exchange-filter",`+
		`"realm_access":{"roles":["default-roles-demo"]},`+
		`"resource_access":{"kagenti-api":{"roles":["agent-user"]}},"scope":"profile email",`+
		`"preferred_username":"ada","email":"ada@example.com"}`, exp, exp-300)
}

// testJWT is the exchanged token most success tests get back.
var testJWT = makeJWT(keycloakClaims(testNowSec + 300))

// successBody is Keycloak's token-exchange answer around an access token; expiresIn is the raw
// JSON value of expires_in, or "" to leave the field out.
func successBody(accessToken, expiresIn string) []byte {
	var b strings.Builder
	b.WriteString(`{"access_token":"` + accessToken + `",`)
	if expiresIn != "" {
		b.WriteString(`"expires_in":` + expiresIn + `,`)
	}
	b.WriteString(`"refresh_expires_in":0,"token_type":"Bearer",` +
		`"issued_token_type":"urn:ietf:params:oauth:token-type:access_token","not-before-policy":0,` +
		`"session_state":"4f3e2d1c-0b9a-8f7e-6d5c-4b3a2f1e0d9c","scope":"profile email"}`)
	return []byte(b.String())
}

// oauthError is an OAuth error body as Keycloak writes it.
func oauthError(code, desc string) []byte {
	b, err := json.Marshal(map[string]string{"error": code, "error_description": desc})
	if err != nil {
		panic(err)
	}
	return b
}

// Envoy's own local replies for a failed callout (ENVOY-HOST.md).
const (
	envoyConnectError = "upstream connect error or disconnect/reset before headers. reset reason: " +
		"remote connection failure, transport failure reason: delayed connect error: 111"
	envoyTimeout = "upstream request timeout"
	htmlPage     = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n" +
		"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
