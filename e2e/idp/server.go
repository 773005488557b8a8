package idp

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// kcServer is op's LegacyServer (op.Provider + storage) with the Keycloak behaviour op does not
// have: client authentication answers, the standard token exchange preconditions, the subject
// token verification answer, and Keycloak's success shape.
type kcServer struct {
	*op.LegacyServer
	p *IdP
}

// tokenResponse is Keycloak's AccessTokenResponse as the token endpoint serialises it.
type tokenResponse struct {
	AccessToken      string `json:"access_token"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshExpiresIn int64  `json:"refresh_expires_in"`
	TokenType        string `json:"token_type"`
	IssuedTokenType  string `json:"issued_token_type,omitempty"`
	NotBeforePolicy  int64  `json:"not-before-policy"`
	SessionState     string `json:"session_state,omitempty"`
	Scope            string `json:"scope,omitempty"`
}

// Discovery is op's discovery document, with the grants and client authentications this server
// really serves.
func (s *kcServer) Discovery(ctx context.Context, r *op.Request[struct{}]) (*op.Response, error) {
	resp, err := s.LegacyServer.Discovery(ctx, r)
	if err != nil {
		return nil, err
	}
	if d, ok := resp.Data.(*oidc.DiscoveryConfiguration); ok {
		d.GrantTypesSupported = []oidc.GrantType{oidc.GrantTypeClientCredentials, GrantPassword, oidc.GrantTypeTokenExchange}
		d.TokenEndpointAuthMethodsSupported = []oidc.AuthMethod{oidc.AuthMethodBasic, oidc.AuthMethodPost}
		d.ResponseTypesSupported = []string{string(oidc.ResponseTypeCode)}
	}
	return resp, nil
}

// VerifyClient authenticates the client like Keycloak's ClientIdAndSecretAuthenticator, then makes
// the grant's preconditions that Keycloak checks before anything else of the request:
// client_credentials needs a confidential client with a service account; token exchange needs
// "Standard token exchange" on the client (and on the IdP, see SetTokenExchangeEnabled) and a
// subject_token of type access_token.
func (s *kcServer) VerifyClient(_ context.Context, r *op.Request[op.ClientCredentials]) (op.Client, error) {
	_, secretSent := r.Form["client_secret"]
	c, oerr := s.p.authenticateClient(r.Data.ClientID, r.Data.ClientSecret, secretSent)
	if oerr != nil {
		return nil, oerr.opError()
	}
	switch r.Form.Get("grant_type") {
	case GrantClientCredentials:
		if !c.Confidential {
			return nil, kcError(http.StatusUnauthorized, ErrUnauthorizedClient, DescPublicClientSA)
		}
		if !c.ServiceAccount {
			return nil, kcError(http.StatusUnauthorized, ErrUnauthorizedClient, DescServiceAccountDisabled)
		}
	case GrantTokenExchange:
		if !c.StandardTokenExchange || !s.p.TokenExchangeEnabled() {
			return nil, kcError(http.StatusBadRequest, ErrInvalidRequest, DescExchangeNotEnabled)
		}
		if r.Form.Get("subject_token") == "" {
			return nil, kcError(http.StatusBadRequest, ErrInvalidRequest, DescSubjectTokenRequired)
		}
		switch r.Form.Get("subject_token_type") {
		case "":
			return nil, kcError(http.StatusBadRequest, ErrInvalidRequest, DescSubjectTokenTypeRequired)
		case TokenTypeAccessToken:
		default:
			return nil, kcError(http.StatusBadRequest, ErrInvalidRequest, DescAccessTokensOnly)
		}
	}
	return opClient{c: c, lifetime: s.p.AccessTokenLifetime()}, nil
}

// TokenExchange verifies the subject token (400 invalid_request "Invalid token"), then lets op run
// the exchange; storage.ValidateTokenExchangeRequest makes the remaining Keycloak checks.
func (s *kcServer) TokenExchange(ctx context.Context, r *op.ClientRequest[oidc.TokenExchangeRequest]) (*op.Response, error) {
	subject, err := s.p.verifySubjectToken(ctx, r.Data.SubjectToken)
	if err != nil {
		return nil, kcError(http.StatusBadRequest, ErrInvalidRequest, DescInvalidToken)
	}
	ri := reqInfo{lifetime: s.p.AccessTokenLifetime()}
	sid, _ := subject["sid"].(string)
	if left, ok := s.p.sessions.remaining(sid); ok && left < ri.lifetime {
		ri.lifetime = left.Truncate(time.Second) // capped by the session
	}
	var audiences []string
	// An empty audience is looked up like any other and is not found (400 invalid_client
	// "Audience not found"), as in Keycloak.
	for _, a := range r.Form["audience"] {
		if !slices.Contains(audiences, a) {
			audiences = append(audiences, a)
		}
	}
	if slices.Contains(audiences, "") {
		return nil, kcError(http.StatusBadRequest, ErrInvalidClient, DescAudienceNotFound)
	}
	if len(audiences) > 0 {
		ri.audienceRequested = true
		r.Data.Audience = audiences
	} else if c, ok := s.p.client(r.Client.GetID()); ok {
		// Without an audience parameter Keycloak issues every audience available to the client.
		r.Data.Audience = slices.Clone(c.Audiences)
	}
	ctx = withReqInfo(ctx, ri)
	resp, err := s.LegacyServer.TokenExchange(ctx, r)
	if err != nil {
		return nil, err
	}
	te, ok := resp.Data.(*oidc.TokenExchangeResponse)
	if !ok {
		return resp, nil
	}
	token, err := s.p.keycloakShape(te.AccessToken)
	if err != nil {
		return nil, err
	}
	return s.p.successResponse(GrantTokenExchange, tokenResponse{
		AccessToken:     token,
		ExpiresIn:       int64(ri.lifetime.Seconds()),
		TokenType:       oidc.BearerToken,
		IssuedTokenType: string(te.IssuedTokenType),
		SessionState:    sid,
		Scope:           te.Scopes.String(),
	}), nil
}

// ClientCredentialsExchange lets op issue the service-account token and answers Keycloak's shape.
func (s *kcServer) ClientCredentialsExchange(ctx context.Context, r *op.ClientRequest[oidc.ClientCredentialsRequest]) (*op.Response, error) {
	ri := reqInfo{lifetime: s.p.AccessTokenLifetime()}
	resp, err := s.LegacyServer.ClientCredentialsExchange(withReqInfo(ctx, ri), r)
	if err != nil {
		return nil, err
	}
	at, ok := resp.Data.(*oidc.AccessTokenResponse)
	if !ok {
		return resp, nil
	}
	token, err := s.p.keycloakShape(at.AccessToken)
	if err != nil {
		return nil, err
	}
	return s.p.successResponse(GrantClientCredentials, tokenResponse{
		AccessToken: token,
		ExpiresIn:   int64(ri.lifetime.Seconds()),
		TokenType:   oidc.BearerToken,
		Scope:       at.Scope.String(),
	}), nil
}

// successResponse applies the response hook, if any, to a success answer.
func (p *IdP) successResponse(grant string, tr tokenResponse) *op.Response {
	hook := p.responseHook()
	if hook == nil {
		return op.NewResponse(tr)
	}
	b, _ := json.Marshal(tr)
	m := map[string]any{}
	_ = json.Unmarshal(b, &m)
	hook(grant, m)
	return op.NewResponse(m)
}
