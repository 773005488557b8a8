package idp

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// OAuth error codes the token endpoint answers with (the "error" field).
const (
	ErrInvalidRequest       = "invalid_request"
	ErrInvalidClient        = "invalid_client"
	ErrUnauthorizedClient   = "unauthorized_client"
	ErrInvalidScope         = "invalid_scope"
	ErrInvalidGrant         = "invalid_grant"
	ErrAccessDenied         = "access_denied"
	ErrUnsupportedGrantType = "unsupported_grant_type"
)

// Error descriptions (the "error_description" field), worded as Keycloak words them
// (StandardTokenExchangeProvider, AbstractTokenExchangeProvider, ClientIdAndSecretAuthenticator,
// ClientCredentialsGrantType, TokenEndpoint).
const (
	DescExchangeNotEnabled       = "Standard token exchange is not enabled for the requested client"
	DescInvalidToken             = "Invalid token"
	DescSubjectTokenRequired     = "Parameter 'subject_token' required for standard token exchange"
	DescSubjectTokenTypeRequired = "Parameter 'subject_token_type' required for standard token exchange"
	DescAccessTokensOnly         = "Parameter 'subject_token' supports access tokens only"
	DescRequestedTokenType       = "requested_token_type unsupported"
	DescAudienceNotFound         = "Audience not found"
	DescInvalidIDTokenHint       = "Invalid id_token_hint"
	DescDuplicatedParameter      = "duplicated parameter"
	DescClientDisabled           = "Client disabled"
	DescPublicClientExchange     = "Public client is not allowed to exchange token"
	// DescNotInAudience is Keycloak V2's wording for 403 access_denied (the requesting client is not
	// in the subject token's aud). Keycloak V1 and its external exchange say "Client not allowed to
	// exchange"; tests should match on the error code, not on this text.
	DescNotInAudience          = "Client is not within the token audience"
	DescAudienceNotAvailable   = "Requested audience not available: " // + the missing audiences
	DescInvalidScopes          = "Invalid scopes: "                   // + the scope parameter
	DescInvalidClient          = "Invalid client or Invalid client credentials"
	DescMissingClientID        = "Missing client_id parameter"
	DescUnsupportedGrantType   = "Unsupported grant_type"
	DescMissingGrantType       = "Missing form parameter: grant_type"
	DescPublicClientSA         = "Public client not allowed to retrieve service account"
	DescServiceAccountDisabled = "Client not enabled to retrieve service account"
	DescDirectGrantDisabled    = "Client not allowed for direct access grants"
	DescInvalidUserCredentials = "Invalid user credentials"
	DescMissingUsername        = "Missing parameter: username"
)

// kcError builds an op error that op.WriteError answers with the given status and
// {"error","error_description"}.
func kcError(status int, code, description string) error {
	return op.NewStatusError(oidcError(code).WithDescription("%s", description), status)
}

// oidcError returns an *oidc.Error of the given code (oidc's error type is unexported, so it is
// reached through oidc's constructors, or JSON for codes oidc has no constructor for).
func oidcError(code string) *oidc.Error {
	switch code {
	case ErrInvalidRequest:
		return oidc.ErrInvalidRequest()
	case ErrInvalidClient:
		return oidc.ErrInvalidClient()
	case ErrUnauthorizedClient:
		return oidc.ErrUnauthorizedClient()
	case ErrInvalidScope:
		return oidc.ErrInvalidScope()
	case ErrInvalidGrant:
		return oidc.ErrInvalidGrant()
	case ErrAccessDenied:
		return oidc.ErrAccessDenied()
	case ErrUnsupportedGrantType:
		return oidc.ErrUnsupportedGrantType()
	}
	e := new(oidc.Error)
	b, _ := json.Marshal(map[string]string{"error": code})
	_ = json.Unmarshal(b, e)
	return e
}

// oauthError is an OAuth error answer: status, code and description.
type oauthError struct {
	status int
	code   string
	desc   string
}

func (e *oauthError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.status, e.code, e.desc)
}

// opError is e as an op error (for errors returned to op).
func (e *oauthError) opError() error { return kcError(e.status, e.code, e.desc) }

// write answers e directly (for errors answered by the front handler).
func (e *oauthError) write(w http.ResponseWriter) { writeError(w, e.status, e.code, e.desc) }

// errorBody is Keycloak's error shape.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// writeError answers like Keycloak does for an OAuth error raised outside op.
func writeError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, errorBody{Error: code, Description: description})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
