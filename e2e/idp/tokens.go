package idp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/crypto"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// MintOptions change a token made by MintUserTokenWith.
type MintOptions struct {
	// Lifetime of the token; 0 means the IdP's access token lifetime, a negative value makes a token
	// that expired that long ago.
	Lifetime time.Duration
	// Audience replaces the audiences of the client's audience mapper (Client.Audiences).
	Audience []string
	// Scope requested (space separated); the token's scope is it plus "profile email".
	Scope string
	// Claims are extra claims (they may replace typ, azp, scope, preferred_username, email; op sets
	// iss, sub, aud, exp, iat, nbf, jti and client_id itself).
	Claims map[string]any
}

// MintUserToken returns an access token of user username issued to clientID, exactly as the
// password grant of that client would issue it (same signing key, same claims: sub, aud from the
// client's audience mapper, azp = clientID, exp, iat, iss, scope, preferred_username, typ, jti).
// The client need not exist (then aud = [clientID]).
func (p *IdP) MintUserToken(username, clientID string) (string, error) {
	return p.MintUserTokenWith(username, clientID, MintOptions{})
}

// MintUserTokenWith is MintUserToken with options.
func (p *IdP) MintUserTokenWith(username, clientID string, o MintOptions) (string, error) {
	u, ok := p.user(username)
	if !ok {
		return "", fmt.Errorf("idp: unknown user %q", username)
	}
	c, ok := p.client(clientID)
	if !ok {
		c = Client{ID: clientID}
	}
	aud := c.Audiences
	if o.Audience != nil {
		aud = o.Audience
	}
	req := &tokenRequest{
		subject:  u.Subject,
		audience: slices.Clone(aud),
		scopes:   tokenScopes(strings.Fields(o.Scope)),
		clientID: c.ID,
		username: u.Username,
		email:    u.Email,
		lifetime: o.Lifetime,
		sid:      p.sessions.start(u.Subject), // as if the user had just logged in
		extra:    o.Claims,
	}
	return p.createToken(context.Background(), req, c)
}

// createToken signs the access token of req with op.CreateAccessToken.
func (p *IdP) createToken(ctx context.Context, req *tokenRequest, c Client) (string, error) {
	ctx = op.ContextWithIssuer(ctx, p.issuer)
	token, _, _, err := op.CreateAccessToken(ctx, req, op.AccessTokenTypeJWT, p.provider,
		opClient{c: c, lifetime: p.AccessTokenLifetime()}, "")
	if err != nil {
		return "", err
	}
	return p.keycloakShape(token)
}

// keycloakShape re-signs a token op made with Keycloak's aud shape: a single audience is a JSON
// string, several are an array (op always writes an array). Keycloak's AccessToken serialises
// aud through JsonWebToken.audience, which writes one value as a string.
func (p *IdP) keycloakShape(token string) (string, error) {
	claims, err := DecodeClaims(token)
	if err != nil {
		return "", err
	}
	aud, ok := claims["aud"].([]any)
	if !ok || len(aud) != 1 {
		return token, nil
	}
	claims["aud"] = aud[0]
	return p.SignClaims(claims)
}

// SignClaims signs arbitrary claims with the IdP's key (RS256, the IdP's kid): for tokens no grant
// would issue, e.g. a wrong issuer.
func (p *IdP) SignClaims(claims map[string]any) (string, error) {
	signer, err := op.SignerFromKey(signingKey{id: p.kid, key: p.key})
	if err != nil {
		return "", err
	}
	return crypto.Sign(claims, signer)
}

// VerifyToken verifies a token this IdP issued (RS256 signature with the IdP's key, issuer, expiry)
// and returns its claims.
func (p *IdP) VerifyToken(token string) (map[string]any, error) {
	return p.verifyToken(context.Background(), token)
}

func (p *IdP) verifyToken(ctx context.Context, token string) (map[string]any, error) {
	v := op.NewAccessTokenVerifier(p.issuer, &op.OpenIDKeySet{Storage: p.storage})
	if _, err := op.VerifyAccessToken[*oidc.AccessTokenClaims](ctx, token, v); err != nil {
		return nil, err
	}
	return DecodeClaims(token)
}

// verifySubjectToken is Keycloak's verification of a subject token: a valid access token of this
// realm ("typ" Bearer when present) of an existing user or service account.
func (p *IdP) verifySubjectToken(ctx context.Context, token string) (map[string]any, error) {
	claims, err := p.verifyToken(ctx, token)
	if err != nil {
		return nil, err
	}
	if typ, ok := claims["typ"]; ok && typ != "Bearer" {
		return nil, fmt.Errorf("idp: token type %v is not Bearer", typ)
	}
	sub, _ := claims["sub"].(string)
	if _, ok := p.userBySubject(sub); ok {
		// A user's token is only as good as its session: logged out or expired is "Invalid
		// token" whatever its exp says.
		sid, _ := claims["sid"].(string)
		if _, live := p.sessions.remaining(sid); !live {
			return nil, fmt.Errorf("idp: session %q of the token is not active", sid)
		}
		return claims, nil
	}
	if azp, _ := claims["azp"].(string); azp != "" && sub == ServiceAccountSubject(azp) {
		if c, ok := p.client(azp); ok && c.ServiceAccount {
			return claims, nil
		}
	}
	return nil, fmt.Errorf("idp: subject %q is not a user of the realm", sub)
}

// DecodeClaims returns the claims of a JWT without verifying it.
func DecodeClaims(token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("idp: not a JWS compact serialisation")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, fmt.Errorf("idp: JWT payload: %w", err)
	}
	claims := map[string]any{}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, fmt.Errorf("idp: JWT payload: %w", err)
	}
	return claims, nil
}

// passwordGrant is Keycloak's Resource Owner Password Credentials grant, for an authenticated client.
func (p *IdP) passwordGrant(w http.ResponseWriter, r *http.Request, form url.Values, c Client) {
	if c.DirectAccessGrantsDisabled {
		writeError(w, http.StatusBadRequest, ErrUnauthorizedClient, DescDirectGrantDisabled)
		return
	}
	username := form.Get("username")
	if username == "" {
		writeError(w, http.StatusUnauthorized, ErrInvalidRequest, DescMissingUsername)
		return
	}
	u, ok := p.user(username)
	if !ok || u.Password != form.Get("password") {
		writeError(w, http.StatusUnauthorized, ErrInvalidGrant, DescInvalidUserCredentials)
		return
	}
	scopes := cleanScopes([]string{form.Get("scope")})
	if !p.validScopes(scopes) {
		writeError(w, http.StatusBadRequest, ErrInvalidScope, DescInvalidScopes+form.Get("scope"))
		return
	}
	lifetime := p.AccessTokenLifetime()
	req := &tokenRequest{
		subject:  u.Subject,
		audience: slices.Clone(c.Audiences),
		scopes:   tokenScopes(scopes),
		clientID: c.ID,
		username: u.Username,
		email:    u.Email,
		lifetime: lifetime,
		sid:      p.sessions.start(u.Subject),
	}
	token, err := p.createToken(r.Context(), req, c)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	resp := p.successResponse(GrantPassword, tokenResponse{
		AccessToken:  token,
		ExpiresIn:    int64(lifetime.Seconds()),
		TokenType:    oidc.BearerToken,
		SessionState: req.sid,
		Scope:        strings.Join(req.scopes, " "),
	})
	writeJSON(w, http.StatusOK, resp.Data)
}
