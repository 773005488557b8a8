// Package oauth speaks the token endpoint's protocol: it builds the form bodies and headers of
// the RFC 8693 token exchange and of the client-credentials grant, parses Keycloak's success
// and error answers, and classifies every failure. It has no host dependency.
package oauth

// Grant and token type URNs (RFC 8693).
const (
	GrantTypeTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
	GrantTypeClientCredentials = "client_credentials"
	TokenTypeAccessToken       = "urn:ietf:params:oauth:token-type:access_token"
)

// MaxBodyBytes is the largest IdP response body accepted; a larger one is a Malformed failure.
const MaxBodyBytes = 64 << 10

// Client is the filter's confidential client.
type Client struct {
	ID     string
	Secret string
	Basic  bool // true: HTTP Basic authorization header; false: client_id/client_secret form fields
}

// Endpoint is where the callout goes (pseudo-headers of the request).
type Endpoint struct {
	Scheme    string // :scheme
	Authority string // :authority, host[:port]
	Path      string // :path, path and query
}

// Token is a successful answer.
type Token struct {
	AccessToken string
	// ExpiresIn is the lifetime in seconds from the answer's expires_in; when the answer has no
	// (usable) expires_in it is taken from the token's JWT "exp" claim relative to now, if the
	// token is a JWT; HasExpiry reports whether either was found.
	ExpiresIn int64
	HasExpiry bool
}

// Class groups failures by what the filter should do about them.
type Class uint8

const (
	// Transient: connect failure, reset, timeout (504), any 5xx, 429. Worth retrying later.
	Transient Class = iota + 1
	// SubjectRejected: the IdP refused this user's token (400 invalid_request / invalid_grant /
	// invalid_token, 403 access_denied). Another user's token may well work.
	SubjectRejected
	// Configuration: the filter's client or the realm is set up wrong (unsupported_grant_type,
	// invalid_client, unauthorized_client, invalid_scope, "Standard token exchange is not enabled
	// for the requested client", any other 4xx). Every user fails the same way.
	Configuration
	// Malformed: an answer that is not the protocol: a 2xx without access_token, non-JSON (an
	// HTML error page), an empty body, a body over MaxBodyBytes, an unusable access_token.
	Malformed
)

// Failure describes why the IdP did not give a token. It never contains a token or secret.
type Failure struct {
	Class  Class
	Status int    // HTTP status of the answer; 0 when there was none (reset)
	Code   string // the OAuth "error" (sanitised: [a-z0-9_.-], at most 64 bytes), or "" if none
	// Description is the OAuth error_description, sanitised for logs: printable ASCII only, at
	// most 160 bytes, and any run of 24 or more token characters replaced by "[redacted]", so
	// that even an IdP echoing a token cannot make us log it.
	Description string
}

// MaxTokenBytes is the largest token accepted, from the user or from the IdP.
const MaxTokenBytes = 16 << 10

// MaxExpiresIn bounds Token.ExpiresIn in both directions (about 68 years), so that whatever the
// IdP sends, the caller can turn it into milliseconds and add it to a clock without overflow.
const MaxExpiresIn = 1<<31 - 1

// Caps of the sanitised Failure fields.
const (
	MaxCodeBytes        = 64
	MaxDescriptionBytes = 160
)
