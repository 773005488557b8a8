package idp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// grant type values of the token endpoint.
const (
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange"
	GrantClientCredentials = "client_credentials"
	GrantPassword          = "password"

	// TokenTypeAccessToken is the only subject_token_type (and requested/issued token type) accepted.
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
)

var errNotSupported = errors.New("idp: not supported by this test IdP")

// storage implements op.Storage, op.ClientCredentialsStorage, op.TokenExchangeStorage and
// op.CanGetPrivateClaimsFromRequest in memory, on the realm state of its IdP.
type storage struct {
	p *IdP
}

var (
	_ op.Storage                        = (*storage)(nil)
	_ op.ClientCredentialsStorage       = (*storage)(nil)
	_ op.TokenExchangeStorage           = (*storage)(nil)
	_ op.CanGetPrivateClaimsFromRequest = (*storage)(nil)
)

// reqInfo travels in the context from the token endpoint into storage.
type reqInfo struct {
	lifetime          time.Duration
	audienceRequested bool
}

type reqInfoKey struct{}

func withReqInfo(ctx context.Context, ri reqInfo) context.Context {
	return context.WithValue(ctx, reqInfoKey{}, ri)
}

func reqInfoFrom(ctx context.Context) (reqInfo, bool) {
	ri, ok := ctx.Value(reqInfoKey{}).(reqInfo)
	return ri, ok
}

// opClient adapts a Client to op.Client.
type opClient struct {
	c        Client
	lifetime time.Duration
}

var _ op.Client = opClient{}

func (c opClient) GetID() string                    { return c.c.ID }
func (c opClient) RedirectURIs() []string           { return nil }
func (c opClient) PostLogoutRedirectURIs() []string { return nil }
func (c opClient) ApplicationType() op.ApplicationType {
	if c.c.Confidential {
		return op.ApplicationTypeWeb
	}
	return op.ApplicationTypeUserAgent
}
func (c opClient) AuthMethod() oidc.AuthMethod {
	if c.c.Confidential {
		return oidc.AuthMethodBasic
	}
	return oidc.AuthMethodNone
}
func (c opClient) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

// GrantTypes lists every grant so op never refuses one itself: the Keycloak checks (service
// account, standard token exchange, direct access grants) are made by this package.
func (c opClient) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeClientCredentials, oidc.GrantTypeTokenExchange, GrantPassword}
}
func (c opClient) LoginURL(string) string               { return "" }
func (c opClient) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c opClient) IDTokenLifetime() time.Duration       { return c.lifetime }
func (c opClient) DevMode() bool                        { return false }
func (c opClient) IsScopeAllowed(string) bool           { return true }
func (c opClient) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c opClient) ClockSkew() time.Duration             { return 0 }
func (c opClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c opClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// tokenRequest is an op.TokenRequest for user tokens (password grant, MintUserToken) and
// service-account tokens (client_credentials).
type tokenRequest struct {
	subject  string
	audience []string
	scopes   []string
	clientID string
	username string
	email    string
	// lifetime overrides the IdP's lifetime when non-zero (negative: already expired).
	lifetime time.Duration
	// sid is the user session the token belongs to ("" for service accounts).
	sid   string
	extra map[string]any
}

func (r *tokenRequest) GetSubject() string    { return r.subject }
func (r *tokenRequest) GetAudience() []string { return r.audience }
func (r *tokenRequest) GetScopes() []string   { return r.scopes }

// signingKey and publicKey adapt the RSA key to op.SigningKey and op.Key.
type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

type publicKey struct {
	id  string
	key *rsa.PublicKey
}

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.key }

// ---- op.AuthStorage ----

func (s *storage) CreateAuthRequest(context.Context, *oidc.AuthRequest, string) (op.AuthRequest, error) {
	return nil, oidc.ErrRequestNotSupported().WithParent(errNotSupported)
}
func (s *storage) AuthRequestByID(context.Context, string) (op.AuthRequest, error) {
	return nil, errNotSupported
}
func (s *storage) AuthRequestByCode(context.Context, string) (op.AuthRequest, error) {
	return nil, errNotSupported
}
func (s *storage) SaveAuthCode(context.Context, string, string) error { return errNotSupported }
func (s *storage) DeleteAuthRequest(context.Context, string) error    { return nil }

// CreateAccessToken returns a new token id and the expiry of the token about to be signed.
func (s *storage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	lifetime := s.p.AccessTokenLifetime()
	if ri, ok := reqInfoFrom(ctx); ok && ri.lifetime != 0 {
		lifetime = ri.lifetime
	}
	if tr, ok := req.(*tokenRequest); ok && tr.lifetime != 0 {
		lifetime = tr.lifetime
	}
	return newUUID(), time.Now().Add(lifetime), nil
}

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, oidc.ErrInvalidRequest().WithDescription("refresh tokens are not supported").WithParent(errNotSupported)
}
func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, op.ErrInvalidRefreshToken
}
func (s *storage) TerminateSession(context.Context, string, string) error { return nil }
func (s *storage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return nil
}
func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{id: s.p.kid, key: s.p.key}, nil
}
func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}
func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{id: s.p.kid, key: &s.p.key.PublicKey}}, nil
}

// ---- op.OPStorage ----

func (s *storage) GetClientByClientID(_ context.Context, clientID string) (op.Client, error) {
	c, ok := s.p.client(clientID)
	if !ok {
		return nil, fmt.Errorf("idp: client %q not found", clientID)
	}
	return opClient{c: c, lifetime: s.p.AccessTokenLifetime()}, nil
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, clientID, clientSecret string) error {
	c, ok := s.p.client(clientID)
	if !ok || c.Disabled || (c.Confidential && c.Secret != clientSecret) {
		return errors.New("idp: invalid client credentials")
	}
	return nil
}

func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}
func (s *storage) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, _, subject, _ string) error {
	u, ok := s.p.userBySubject(subject)
	if !ok {
		return errors.New("idp: unknown subject")
	}
	info.Subject = u.Subject
	info.PreferredUsername = u.Username
	info.Email = u.Email
	return nil
}
func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errNotSupported
}
func (s *storage) GetPrivateClaimsFromScopes(_ context.Context, userID, clientID string, scopes []string) (map[string]any, error) {
	claims := map[string]any{"azp": clientID, "typ": "Bearer", "scope": strings.Join(scopes, " ")}
	if u, ok := s.p.userBySubject(userID); ok {
		claims["preferred_username"] = u.Username
	}
	return claims, nil
}
func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errNotSupported
}
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errNotSupported
}
func (s *storage) Health(context.Context) error { return nil }

// ---- op.CanGetPrivateClaimsFromRequest ----

// GetPrivateClaimsFromRequest adds Keycloak's claims to user and service-account tokens. op sets
// iss, sub, aud, exp, iat, nbf, jti and client_id itself.
func (s *storage) GetPrivateClaimsFromRequest(ctx context.Context, req op.TokenRequest, _ []string) (map[string]any, error) {
	tr, ok := req.(*tokenRequest)
	if !ok {
		return s.GetPrivateClaimsFromScopes(ctx, req.GetSubject(), "", req.GetScopes())
	}
	claims := make(map[string]any, len(tr.extra)+5)
	claims["typ"] = "Bearer"
	claims["azp"] = tr.clientID
	claims["scope"] = strings.Join(tr.scopes, " ")
	claims["preferred_username"] = tr.username
	if tr.email != "" {
		claims["email"] = tr.email
	}
	if tr.sid != "" {
		claims["sid"] = tr.sid
	}
	for k, v := range tr.extra {
		claims[k] = v
	}
	return claims, nil
}

// ---- op.ClientCredentialsStorage ----

// ClientCredentials is not reached through the token endpoint (kcServer.VerifyClient
// authenticates every client); it is implemented for completeness.
func (s *storage) ClientCredentials(ctx context.Context, clientID, clientSecret string) (op.Client, error) {
	if err := s.AuthorizeClientIDSecret(ctx, clientID, clientSecret); err != nil {
		return nil, err
	}
	return s.GetClientByClientID(ctx, clientID)
}

// ClientCredentialsTokenRequest describes the service-account token of an authenticated client.
func (s *storage) ClientCredentialsTokenRequest(_ context.Context, clientID string, scopes []string) (op.TokenRequest, error) {
	c, ok := s.p.client(clientID)
	if !ok {
		return nil, kcError(http.StatusUnauthorized, ErrInvalidClient, DescInvalidClient)
	}
	scopes = cleanScopes(scopes)
	if !s.p.validScopes(scopes) {
		return nil, kcError(http.StatusBadRequest, ErrInvalidScope, DescInvalidScopes+strings.Join(scopes, " "))
	}
	return &tokenRequest{
		subject:  ServiceAccountSubject(c.ID),
		audience: slices.Clone(c.Audiences),
		scopes:   tokenScopes(scopes),
		clientID: c.ID,
		username: ServiceAccountUsername(c.ID),
	}, nil
}

// ---- op.TokenExchangeStorage ----

// ValidateTokenExchangeRequest makes Keycloak's standard token exchange (V2) checks that follow the
// verification of the subject token, in Keycloak's order.
func (s *storage) ValidateTokenExchangeRequest(ctx context.Context, req op.TokenExchangeRequest) error {
	switch req.GetRequestedTokenType() {
	case "":
		req.SetRequestedTokenType(oidc.AccessTokenType)
	case oidc.AccessTokenType:
	default:
		return kcError(http.StatusBadRequest, ErrInvalidRequest, DescRequestedTokenType)
	}
	requester, ok := s.p.client(req.GetClientID())
	if !ok {
		return kcError(http.StatusUnauthorized, ErrInvalidClient, DescInvalidClient)
	}
	ri, _ := reqInfoFrom(ctx)
	var targets []Client
	if ri.audienceRequested {
		for _, aud := range req.GetAudience() {
			c, ok := s.p.client(aud)
			if !ok {
				return kcError(http.StatusBadRequest, ErrInvalidClient, DescAudienceNotFound)
			}
			targets = append(targets, c)
		}
	}
	if !requester.Confidential {
		return kcError(http.StatusBadRequest, ErrInvalidClient, DescPublicClientExchange)
	}
	for _, t := range targets {
		if t.Disabled {
			return kcError(http.StatusBadRequest, ErrInvalidClient, DescClientDisabled)
		}
	}
	subjectClaims := req.GetExchangeSubjectTokenClaims()
	holder, _ := subjectClaims["azp"].(string)
	if holder != requester.ID && !slices.Contains(audienceOf(subjectClaims), requester.ID) {
		return kcError(http.StatusForbidden, ErrAccessDenied, DescNotInAudience)
	}
	scopes := cleanScopes(req.GetScopes())
	if !s.p.validScopes(scopes) {
		return kcError(http.StatusBadRequest, ErrInvalidScope, DescInvalidScopes+strings.Join(scopes, " "))
	}
	var missing []string
	for _, t := range targets {
		if !slices.Contains(requester.Audiences, t.ID) && !slices.Contains(missing, t.ID) {
			missing = append(missing, t.ID)
		}
	}
	if len(missing) > 0 {
		return kcError(http.StatusBadRequest, ErrInvalidRequest, DescAudienceNotAvailable+strings.Join(missing, ", "))
	}
	req.SetCurrentScopes(tokenScopes(scopes))
	return nil
}

func (s *storage) CreateTokenExchangeRequest(context.Context, op.TokenExchangeRequest) error {
	return nil
}

// GetPrivateClaimsFromTokenExchangeRequest: the exchanged token keeps the user's sub (op sets it),
// gets azp = the requesting client, and no act claim.
func (s *storage) GetPrivateClaimsFromTokenExchangeRequest(_ context.Context, req op.TokenExchangeRequest) (map[string]any, error) {
	claims := map[string]any{
		"typ":   "Bearer",
		"azp":   req.GetClientID(),
		"scope": strings.Join(req.GetScopes(), " "),
	}
	// The exchanged token belongs to the subject token's session.
	if sid, ok := req.GetExchangeSubjectTokenClaims()["sid"].(string); ok && sid != "" {
		claims["sid"] = sid
	}
	if u, ok := s.p.userBySubject(req.GetSubject()); ok {
		claims["preferred_username"] = u.Username
		if u.Email != "" {
			claims["email"] = u.Email
		}
	} else if name, ok := req.GetExchangeSubjectTokenClaims()["preferred_username"].(string); ok {
		claims["preferred_username"] = name
	}
	return claims, nil
}

func (s *storage) SetUserinfoFromTokenExchangeRequest(_ context.Context, info *oidc.UserInfo, req op.TokenExchangeRequest) error {
	info.Subject = req.GetSubject()
	if u, ok := s.p.userBySubject(req.GetSubject()); ok {
		info.PreferredUsername = u.Username
		info.Email = u.Email
	}
	return nil
}

// ---- helpers ----

// audienceOf returns the aud claim as a list (it may be a string or an array).
func audienceOf(claims map[string]any) []string {
	switch v := claims["aud"].(type) {
	case string:
		return []string{v}
	case []string:
		return v
	case []any:
		out := make([]string, 0, len(v))
		for _, a := range v {
			if s, ok := a.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// cleanScopes drops empty entries and duplicates.
func cleanScopes(scopes []string) []string {
	var out []string
	for _, s := range scopes {
		for _, f := range strings.Fields(s) {
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}

// tokenScopes is the "scope" of an issued token: the requested scopes, then Keycloak's default
// scopes profile and email.
func tokenScopes(requested []string) []string {
	out := cleanScopes(requested)
	for _, d := range tokenDefaultScopes {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
