package idp

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// errorRealm is DefaultConfig plus clients for the error rows of KEYCLOAK.md.
func errorRealm(c *Config) {
	c.Clients = append(c.Clients,
		// confidential, standard token exchange off
		Client{ID: "no-exchange", Secret: "s", Confidential: true, ServiceAccount: true},
		// public, standard token exchange on (Keycloak refuses public clients anyway)
		Client{ID: "public-exchanger", StandardTokenExchange: true},
		// disabled client
		Client{ID: "disabled-client", Secret: "s", Confidential: true, StandardTokenExchange: true, Disabled: true},
		// a user-facing client whose tokens carry every client above in aud
		Client{ID: "wide-ui", Audiences: []string{FilterClientID, "no-exchange", "public-exchanger", "disabled-client"}},
	)
	// the filter may ask for the disabled client as audience (so that "Client disabled" is reached)
	c.Clients[0].Audiences = append(c.Clients[0].Audiences, "disabled-client")
}

// TestKeycloakErrorRows reproduces every row of KEYCLOAK.md's error table (status and error), in
// Keycloak's wording.
func TestKeycloakErrorRows(t *testing.T) {
	p := start(t, errorRealm)
	alice := mint(t, p, "alice")
	wide, err := p.MintUserToken("alice", "wide-ui")
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := p.MintUserTokenWith("alice", UIClientID, MintOptions{Lifetime: -time.Minute})
	other := start(t, func(c *Config) { c.SigningKey = nil })
	foreign := mint(t, other, "alice")
	wrongIssuer, _ := p.SignClaims(map[string]any{"iss": "http://127.0.0.1:1/realms/demo", "sub": p.Subject("alice"),
		"aud": FilterClientID, "azp": UIClientID, "typ": "Bearer",
		"exp": time.Now().Add(time.Minute).Unix(), "iat": time.Now().Unix()})
	unknownUser, _ := p.SignClaims(map[string]any{"iss": p.Issuer(), "sub": "no-such-user", "aud": FilterClientID,
		"azp": UIClientID, "typ": "Bearer", "exp": time.Now().Add(time.Minute).Unix(), "iat": time.Now().Unix()})
	idToken, _ := p.MintUserTokenWith("alice", UIClientID, MintOptions{Claims: map[string]any{"typ": "ID"}})
	tampered := alice[:strings.LastIndexByte(alice, '.')+1] + "c2lnbmF0dXJl"
	// aud = [kagenti-api]: the filter is not in the audience (and not the holder).
	notForFilter, _ := p.MintUserToken("alice", APIClientID)

	with := func(f url.Values, kv ...string) url.Values {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				f.Del(kv[i])
			} else {
				f.Set(kv[i], kv[i+1])
			}
		}
		return f
	}
	type row struct {
		name   string
		setup  func()
		form   url.Values
		basic  []string
		status int
		code   string
		desc   string
	}
	rows := []row{
		// token exchange disabled server-wide
		{name: "exchange feature off", setup: func() { p.SetTokenExchangeFeature(false) },
			form: exchangeForm(alice, APIClientID), status: 400, code: ErrUnsupportedGrantType, desc: DescUnsupportedGrantType},
		// "Standard token exchange is not enabled for the requested client"
		{name: "client switch off", form: with(exchangeForm(wide, APIClientID), "client_id", "no-exchange", "client_secret", "s"),
			status: 400, code: ErrInvalidRequest, desc: DescExchangeNotEnabled},
		{name: "SetTokenExchangeEnabled(false)", setup: func() { p.SetTokenExchangeEnabled(false) },
			form: exchangeForm(alice, APIClientID), status: 400, code: ErrInvalidRequest, desc: DescExchangeNotEnabled},
		// subject token missing, wrong type, or fails verification
		{name: "subject_token missing", form: with(exchangeForm(alice, APIClientID), "subject_token", ""),
			status: 400, code: ErrInvalidRequest, desc: DescSubjectTokenRequired},
		{name: "subject_token_type missing", form: with(exchangeForm(alice, APIClientID), "subject_token_type", ""),
			status: 400, code: ErrInvalidRequest, desc: DescSubjectTokenTypeRequired},
		{name: "subject_token_type id_token", form: with(exchangeForm(alice, APIClientID), "subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
			status: 400, code: ErrInvalidRequest, desc: DescAccessTokensOnly},
		{name: "expired", form: exchangeForm(expired, APIClientID), status: 400, code: ErrInvalidRequest, desc: DescInvalidToken},
		{name: "other key", form: exchangeForm(foreign, APIClientID), status: 400, code: ErrInvalidRequest, desc: DescInvalidToken},
		{name: "wrong issuer", form: exchangeForm(wrongIssuer, APIClientID), status: 400, code: ErrInvalidRequest, desc: DescInvalidToken},
		{name: "tampered signature", form: exchangeForm(tampered, APIClientID), status: 400, code: ErrInvalidRequest, desc: DescInvalidToken},
		{name: "not a JWT", form: exchangeForm("opaque-token", APIClientID), status: 400, code: ErrInvalidRequest, desc: DescInvalidToken},
		{name: "unknown user", form: exchangeForm(unknownUser, APIClientID), status: 400, code: ErrInvalidRequest, desc: DescInvalidToken},
		{name: "ID token", form: exchangeForm(idToken, APIClientID), status: 400, code: ErrInvalidRequest, desc: DescInvalidToken},
		{name: "requested_token_type refresh", form: with(exchangeForm(alice, APIClientID), "requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"),
			status: 400, code: ErrInvalidRequest},
		// public client, disabled audience client, unknown audience
		{name: "public client", form: with(exchangeForm(wide, ""), "client_id", "public-exchanger", "client_secret", ""),
			status: 400, code: ErrInvalidClient, desc: DescPublicClientExchange},
		{name: "disabled audience", form: exchangeForm(alice, "disabled-client"), status: 400, code: ErrInvalidClient, desc: DescClientDisabled},
		{name: "unknown audience", form: exchangeForm(alice, "no-such-api"), status: 400, code: ErrInvalidClient, desc: DescAudienceNotFound},
		{name: "empty audience", form: func() url.Values { f := exchangeForm(alice, ""); f["audience"] = []string{""}; return f }(),
			status: 400, code: ErrInvalidClient, desc: DescAudienceNotFound},
		// audience not available to the user
		{name: "audience not available", form: exchangeForm(alice, UIClientID), status: 400, code: ErrInvalidRequest,
			desc: DescAudienceNotAvailable + UIClientID},
		// bad scope
		{name: "bad scope", form: with(exchangeForm(alice, APIClientID), "scope", "openid nonexistent"),
			status: 400, code: ErrInvalidScope, desc: DescInvalidScopes + "openid nonexistent"},
		// requester not in the subject token's audience
		{name: "not in audience", form: exchangeForm(notForFilter, APIClientID), status: 403, code: ErrAccessDenied, desc: DescNotInAudience},
		// missing or wrong client secret
		{name: "missing secret", form: with(exchangeForm(alice, APIClientID), "client_secret", ""),
			status: 401, code: ErrUnauthorizedClient, desc: DescInvalidClient},
		{name: "wrong secret", form: with(exchangeForm(alice, APIClientID), "client_secret", "wrong"),
			status: 401, code: ErrUnauthorizedClient, desc: DescInvalidClient},
		{name: "wrong secret (basic)", form: with(exchangeForm(alice, APIClientID), "client_id", "", "client_secret", ""),
			basic: []string{FilterClientID, "wrong"}, status: 401, code: ErrUnauthorizedClient, desc: DescInvalidClient},
		{name: "wrong secret, client credentials", form: clientCredentialsForm(FilterClientID, "wrong"),
			status: 401, code: ErrUnauthorizedClient, desc: DescInvalidClient},
		// unknown or disabled client
		{name: "unknown client", form: with(exchangeForm(alice, APIClientID), "client_id", "no-such-client"),
			status: 401, code: ErrInvalidClient, desc: DescInvalidClient},
		{name: "disabled client", form: with(exchangeForm(wide, APIClientID), "client_id", "disabled-client", "client_secret", "s"),
			status: 401, code: ErrInvalidClient, desc: DescInvalidClient},
		{name: "unknown client, client credentials", form: clientCredentialsForm("no-such-client", "x"),
			status: 401, code: ErrInvalidClient, desc: DescInvalidClient},

		// client credentials and password grant
		{name: "cc public client", form: with(clientCredentialsForm(UIClientID, ""), "client_secret", ""),
			status: 401, code: ErrUnauthorizedClient, desc: DescPublicClientSA},
		{name: "cc without service account", form: clientCredentialsForm(APIClientID, APIClientSecret),
			status: 401, code: ErrUnauthorizedClient, desc: DescServiceAccountDisabled},
		{name: "cc bad scope", form: with(clientCredentialsForm(FilterClientID, FilterClientSecret), "scope", "nonexistent"),
			status: 400, code: ErrInvalidScope},
		{name: "password wrong", form: passwordForm(UIClientID, "alice", "nope"), status: 401, code: ErrInvalidGrant, desc: DescInvalidUserCredentials},
		{name: "password unknown user", form: passwordForm(UIClientID, "mallory", "x"), status: 401, code: ErrInvalidGrant, desc: DescInvalidUserCredentials},
		// the request itself
		{name: "no grant_type", form: url.Values{"client_id": {FilterClientID}}, status: 400, code: ErrInvalidRequest, desc: DescMissingGrantType},
		{name: "unknown grant_type", form: url.Values{"grant_type": {"authorization_code"}, "client_id": {FilterClientID}},
			status: 400, code: ErrUnsupportedGrantType, desc: DescUnsupportedGrantType},
		{name: "no client_id", form: with(exchangeForm(alice, APIClientID), "client_id", ""), status: 400, code: ErrInvalidClient, desc: DescMissingClientID},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			p.SetTokenExchangeFeature(true)
			p.SetTokenExchangeEnabled(true)
			if r.setup != nil {
				r.setup()
			}
			expectError(t, postForm(t, p, r.form, r.basic), r.status, r.code, r.desc)
		})
	}

	// After all that, the IdP still works, and the filter (as the holder of a token) may exchange
	// a token that does not have it in aud.
	p.SetTokenExchangeFeature(true)
	p.SetTokenExchangeEnabled(true)
	holder, _ := p.MintUserTokenWith("alice", FilterClientID, MintOptions{Audience: []string{"something-else"}})
	if a := postForm(t, p, exchangeForm(holder, APIClientID), nil); a.status != 200 {
		t.Errorf("holder exchange: %d %s", a.status, a.raw)
	}
}

func TestExchangeSwitch(t *testing.T) {
	p := start(t, nil)
	tok := mint(t, p, "alice")
	p.SetTokenExchangeEnabled(false)
	if p.TokenExchangeEnabled() {
		t.Fatal("switch not off")
	}
	expectError(t, postForm(t, p, exchangeForm(tok, APIClientID), nil), 400, ErrInvalidRequest, DescExchangeNotEnabled)
	// Client authentication comes first, as in Keycloak.
	f := exchangeForm(tok, APIClientID)
	f.Set("client_secret", "wrong")
	expectError(t, postForm(t, p, f, nil), 401, ErrUnauthorizedClient, DescInvalidClient)
	// client_credentials is unaffected.
	if a := postForm(t, p, clientCredentialsForm(FilterClientID, FilterClientSecret), nil); a.status != 200 {
		t.Errorf("client credentials: %d %s", a.status, a.raw)
	}
	p.SetTokenExchangeEnabled(true)
	if a := postForm(t, p, exchangeForm(tok, APIClientID), nil); a.status != 200 {
		t.Errorf("switched back on: %d %s", a.status, a.raw)
	}
}

func TestRequestShapeErrors(t *testing.T) {
	p := start(t, nil)
	// Not a form: Keycloak's JAX-RS answers 415.
	resp, err := http.Post(p.TokenEndpoint(), "application/json", strings.NewReader(`{"grant_type":"client_credentials"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("JSON body: %d", resp.StatusCode)
	}
	// GET: 405.
	resp, err = http.Get(p.TokenEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	// An Authorization header that is not Basic, without client_id: Basic challenge.
	req, _ := http.NewRequest(http.MethodPost, p.TokenEndpoint(), strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer x")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("bearer auth: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// Basic and form together: the form wins, like Keycloak.
	a := postForm(t, p, clientCredentialsForm(FilterClientID, FilterClientSecret), []string{FilterClientID, "wrong"})
	if a.status != 200 {
		t.Errorf("basic + form: %d %s", a.status, a.raw)
	}
}
