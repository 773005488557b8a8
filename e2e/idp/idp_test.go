package idp

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestDiscoveryAndJWKSAtKeycloakPaths(t *testing.T) {
	p := start(t, nil)
	if !strings.HasPrefix(p.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL %s", p.URL())
	}
	if p.Issuer() != p.URL()+"/realms/demo" || p.TokenEndpoint() != p.URL()+"/realms/demo/protocol/openid-connect/token" {
		t.Fatalf("issuer %s, token endpoint %s", p.Issuer(), p.TokenEndpoint())
	}

	var d struct {
		Issuer        string   `json:"issuer"`
		TokenEndpoint string   `json:"token_endpoint"`
		JWKSURI       string   `json:"jwks_uri"`
		GrantTypes    []string `json:"grant_types_supported"`
		AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
	}
	getJSON(t, p.URL()+"/realms/demo/.well-known/openid-configuration", &d)
	if d.Issuer != p.Issuer() || d.TokenEndpoint != p.TokenEndpoint() ||
		d.JWKSURI != p.URL()+"/realms/demo/protocol/openid-connect/certs" {
		t.Errorf("discovery %+v", d)
	}
	for _, g := range []string{GrantTokenExchange, GrantClientCredentials, GrantPassword} {
		if !slices.Contains(d.GrantTypes, g) {
			t.Errorf("grant %s not advertised: %v", g, d.GrantTypes)
		}
	}
	if !slices.Contains(d.AuthMethods, "client_secret_post") || !slices.Contains(d.AuthMethods, "client_secret_basic") {
		t.Errorf("auth methods %v", d.AuthMethods)
	}

	var jwks jose.JSONWebKeySet
	getJSON(t, d.JWKSURI, &jwks)
	if len(jwks.Keys) != 1 || jwks.Keys[0].KeyID != p.KeyID() || jwks.Keys[0].Algorithm != "RS256" || jwks.Keys[0].Use != "sig" {
		t.Fatalf("jwks %+v", jwks.Keys)
	}
	// A token of the IdP verifies with the published key.
	jws, err := jose.ParseSigned(mint(t, p, "alice"), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if jws.Signatures[0].Header.KeyID != p.KeyID() {
		t.Errorf("kid %q", jws.Signatures[0].Header.KeyID)
	}
	if _, err := jws.Verify(jwks.Keys[0]); err != nil {
		t.Errorf("token does not verify with the JWKS: %v", err)
	}

	// Other realms and paths: 404.
	for _, path := range []string{"/realms/other/.well-known/openid-configuration", "/realms/demo/nope", "/"} {
		resp, err := http.Get(p.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
}

func TestPasswordGrant(t *testing.T) {
	p := start(t, nil)
	a := postForm(t, p, passwordForm(UIClientID, "alice", "alice-password"), nil)
	if a.status != 200 {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	if a.str("token_type") != "Bearer" || a.body["expires_in"] != 300.0 || a.body["refresh_expires_in"] != 0.0 ||
		a.body["not-before-policy"] != 0.0 || a.str("scope") != "profile email" {
		t.Errorf("answer %s", a.raw)
	}
	if _, ok := a.body["issued_token_type"]; ok {
		t.Errorf("issued_token_type in a password answer")
	}
	claims, err := p.VerifyToken(a.str("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(audOf(claims), FilterClientID) {
		t.Errorf("aud %v lacks %s", claims["aud"], FilterClientID)
	}
	if claims["sub"] != p.Subject("alice") || claims["azp"] != UIClientID || claims["preferred_username"] != "alice" ||
		claims["iss"] != p.Issuer() || claims["scope"] != "profile email" || claims["typ"] != "Bearer" {
		t.Errorf("claims %v", claims)
	}
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 300 {
		t.Errorf("exp-iat = %v", exp-iat)
	}

	// With scope openid, and with Basic auth of a confidential client.
	f := passwordForm(UIClientID, "bob", "bob-password")
	f.Set("scope", "openid")
	if a := postForm(t, p, f, nil); a.status != 200 || a.str("scope") != "openid profile email" {
		t.Errorf("scope openid: %d %s", a.status, a.raw)
	}
	f = url.Values{"grant_type": {GrantPassword}, "username": {"bob"}, "password": {"bob-password"}}
	a = postForm(t, p, f, []string{APIClientID, APIClientSecret})
	if a.status != 200 || claimsOf(t, a.str("access_token"))["azp"] != APIClientID {
		t.Errorf("basic: %d %s", a.status, a.raw)
	}
}

func TestMintUserTokenMatchesPasswordGrant(t *testing.T) {
	p := start(t, nil)
	a := postForm(t, p, passwordForm(UIClientID, "alice", "alice-password"), nil)
	fromGrant := claimsOf(t, a.str("access_token"))
	minted, err := p.VerifyToken(mint(t, p, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]any) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		sort.Strings(k)
		return k
	}
	if !slices.Equal(keys(fromGrant), keys(minted)) {
		t.Errorf("claims differ: %v vs %v", keys(fromGrant), keys(minted))
	}
	for _, k := range []string{"sub", "azp", "iss", "scope", "preferred_username", "typ", "client_id"} {
		if fromGrant[k] != minted[k] {
			t.Errorf("%s: %v vs %v", k, fromGrant[k], minted[k])
		}
	}

	if _, err := p.MintUserToken("nobody", UIClientID); err == nil {
		t.Error("minted a token for an unknown user")
	}
	tok, err := p.MintUserTokenWith("bob", "some-other-app", MintOptions{
		Lifetime: time.Minute, Scope: "openid", Claims: map[string]any{"email_verified": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.VerifyToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(audOf(c), []string{"some-other-app"}) || c["scope"] != "openid profile email" ||
		c["email_verified"] != true || c["exp"].(float64)-c["iat"].(float64) != 60 {
		t.Errorf("claims %v", c)
	}
}

func TestVerifyTokenRejects(t *testing.T) {
	p := start(t, nil)
	other := start(t, func(c *Config) { c.SigningKey = nil })
	good := mint(t, p, "alice")
	expired, _ := p.MintUserTokenWith("alice", UIClientID, MintOptions{Lifetime: -time.Minute})
	foreign := mint(t, other, "alice")
	wrongIss, _ := p.SignClaims(map[string]any{"iss": "http://127.0.0.1:1/realms/demo", "sub": p.Subject("alice"),
		"exp": time.Now().Add(time.Minute).Unix(), "iat": time.Now().Unix(), "aud": FilterClientID})
	tampered := good[:len(good)-4] + "AAAA"
	if good[len(good)-4:] == "AAAA" {
		tampered = good[:len(good)-4] + "BBBB"
	}
	if _, err := p.VerifyToken(good); err != nil {
		t.Fatalf("good token: %v", err)
	}
	for name, tok := range map[string]string{"expired": expired, "foreign key": foreign, "wrong issuer": wrongIss,
		"tampered": tampered, "garbage": "not.a.jwt"} {
		if _, err := p.VerifyToken(tok); err == nil {
			t.Errorf("%s token verified", name)
		}
	}
}

func TestTokenExchange(t *testing.T) {
	p := start(t, nil)
	userToken := mint(t, p, "alice")
	for _, basic := range []bool{false, true} {
		form := exchangeForm(userToken, APIClientID)
		var creds []string
		if basic {
			form.Del("client_id")
			form.Del("client_secret")
			creds = []string{FilterClientID, FilterClientSecret}
		}
		a := postForm(t, p, form, creds)
		if a.status != 200 {
			t.Fatalf("basic=%v: %d %s", basic, a.status, a.raw)
		}
		want := []string{"access_token", "expires_in", "issued_token_type", "not-before-policy", "refresh_expires_in", "scope", "session_state", "token_type"}
		var got []string
		for k := range a.body {
			got = append(got, k)
		}
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("fields %v, want %v", got, want)
		}
		if a.str("token_type") != "Bearer" || a.str("issued_token_type") != TokenTypeAccessToken ||
			a.body["expires_in"] != 300.0 || a.body["refresh_expires_in"] != 0.0 || a.body["not-before-policy"] != 0.0 {
			t.Errorf("answer %s", a.raw)
		}
		if cc := a.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q", cc)
		}
		c, err := p.VerifyToken(a.str("access_token"))
		if err != nil {
			t.Fatal(err)
		}
		if c["sub"] != p.Subject("alice") || c["azp"] != FilterClientID || !slices.Equal(audOf(c), []string{APIClientID}) ||
			c["preferred_username"] != "alice" || c["iss"] != p.Issuer() {
			t.Errorf("claims %v", c)
		}
		if _, ok := c["act"]; ok {
			t.Errorf("act claim present: %v", c["act"])
		}
		// The exchanged token belongs to the user's session, named in session_state.
		if sid := claimsOf(t, userToken)["sid"]; sid == nil || a.str("session_state") != sid || c["sid"] != sid {
			t.Errorf("session_state %q, exchanged sid %v, subject sid %v", a.str("session_state"), c["sid"], sid)
		}
		// One audience is a JSON string, as Keycloak writes it.
		if _, ok := c["aud"].(string); !ok {
			t.Errorf("aud %#v: want a JSON string for a single audience", c["aud"])
		}
	}
	if got := p.Requests(); len(got) != 2 || got[0].ClientAuth != "post" || got[1].ClientAuth != "basic" ||
		got[0].ClientID != FilterClientID || got[1].ClientID != FilterClientID {
		t.Errorf("recorded %+v", got)
	}
}

func TestTokenExchangeAudiences(t *testing.T) {
	p := start(t, nil)
	userToken := mint(t, p, "bob")
	// Keycloak only narrows audiences: the requesting client is not in its own tokens' aud
	// unless a mapper adds it, so requesting itself is refused.
	a := postForm(t, p, exchangeForm(userToken, FilterClientID), nil)
	if a.status != 400 || a.str("error") != ErrInvalidRequest || a.str("error_description") != DescAudienceNotAvailable+FilterClientID {
		t.Errorf("audience = client: %d %s", a.status, a.raw)
	}
	// Without audience: every audience mapped to the filter.
	a = postForm(t, p, exchangeForm(userToken, ""), nil)
	if got := audOf(claimsOf(t, a.str("access_token"))); a.status != 200 || !slices.Equal(got, []string{APIClientID}) {
		t.Errorf("no audience: %d aud %v", a.status, got)
	}
	// With a scope.
	f := exchangeForm(userToken, APIClientID)
	f.Set("scope", "openid roles")
	a = postForm(t, p, f, nil)
	if a.status != 200 || a.str("scope") != "openid roles profile email" || claimsOf(t, a.str("access_token"))["scope"] != "openid roles profile email" {
		t.Errorf("scope: %d %s", a.status, a.raw)
	}
	// An exchanged token (azp = filter) can be exchanged again by the filter: it is its holder.
	again := postForm(t, p, exchangeForm(a.str("access_token"), APIClientID), nil)
	if again.status != 200 {
		t.Errorf("re-exchange: %d %s", again.status, again.raw)
	}
}

func TestClientCredentials(t *testing.T) {
	p := start(t, nil)
	for _, basic := range []bool{false, true} {
		form := clientCredentialsForm(FilterClientID, FilterClientSecret)
		var creds []string
		if basic {
			form = url.Values{"grant_type": {GrantClientCredentials}}
			creds = []string{FilterClientID, FilterClientSecret}
		}
		a := postForm(t, p, form, creds)
		if a.status != 200 {
			t.Fatalf("%d %s", a.status, a.raw)
		}
		if _, ok := a.body["issued_token_type"]; ok || a.str("token_type") != "Bearer" || a.body["expires_in"] != 300.0 ||
			a.body["refresh_expires_in"] != 0.0 || a.body["not-before-policy"] != 0.0 {
			t.Errorf("answer %s", a.raw)
		}
		c, err := p.VerifyToken(a.str("access_token"))
		if err != nil {
			t.Fatal(err)
		}
		if c["sub"] != ServiceAccountSubject(FilterClientID) || c["azp"] != FilterClientID ||
			c["preferred_username"] != "service-account-token-exchange-filter" || c["iss"] != p.Issuer() {
			t.Errorf("claims %v", c)
		}
	}
}

func TestRuntimeSettings(t *testing.T) {
	p := start(t, nil)
	p.SetAccessTokenLifetime(31 * time.Second)
	a := postForm(t, p, clientCredentialsForm(FilterClientID, FilterClientSecret), nil)
	c := claimsOf(t, a.str("access_token"))
	if a.body["expires_in"] != 31.0 || c["exp"].(float64)-c["iat"].(float64) != 31 {
		t.Errorf("lifetime 31s: %s", a.raw)
	}
	p.SetResponseHook(func(grant string, body map[string]any) {
		if grant == GrantTokenExchange {
			delete(body, "expires_in")
		}
	})
	a = postForm(t, p, exchangeForm(mint(t, p, "alice"), APIClientID), nil)
	if _, ok := a.body["expires_in"]; a.status != 200 || ok || a.str("access_token") == "" {
		t.Errorf("hook: %d %s", a.status, a.raw)
	}
	p.SetResponseHook(nil)

	// Rotating the filter's secret: the old one is refused.
	c2, _ := p.Client(FilterClientID)
	c2.Secret = "rotated"
	if err := p.SetClient(c2); err != nil {
		t.Fatal(err)
	}
	expectError(t, postForm(t, p, clientCredentialsForm(FilterClientID, FilterClientSecret), nil), 401, ErrUnauthorizedClient, DescInvalidClient)
	if a := postForm(t, p, clientCredentialsForm(FilterClientID, "rotated"), nil); a.status != 200 {
		t.Errorf("rotated secret: %d %s", a.status, a.raw)
	}

	// A user added at run time can log in and be exchanged.
	if err := p.AddUser(User{Username: "carol", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	a = postForm(t, p, passwordForm(UIClientID, "carol", "pw"), nil)
	if a.status != 200 || claimsOf(t, a.str("access_token"))["sub"] != p.Subject("carol") {
		t.Errorf("carol: %d %s", a.status, a.raw)
	}
}

func TestConfigValidation(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"non-loopback":           func(c *Config) { c.Listen = "0.0.0.0:0" },
		"confidential no secret": func(c *Config) { c.Clients = append(c.Clients, Client{ID: "x", Confidential: true}) },
		"duplicate client":       func(c *Config) { c.Clients = append(c.Clients, Client{ID: UIClientID}) },
		"duplicate user":         func(c *Config) { c.Users = append(c.Users, User{Username: "alice"}) },
	} {
		cfg := DefaultConfig()
		mod(&cfg)
		if p, err := Start(cfg); err == nil {
			p.Close()
			t.Errorf("%s: started", name)
		}
	}
}

// Keycloak refuses a form parameter given twice (TokenEndpoint.checkParameterDuplicated), except
// audience and resource: a second subject_token or client_id must not pick one silently.
func TestDuplicatedParametersRefused(t *testing.T) {
	p := start(t, nil)
	userToken := mint(t, p, "bob")
	for _, name := range []string{"subject_token", "client_id", "grant_type", "scope"} {
		f := exchangeForm(userToken, APIClientID)
		v := f.Get(name)
		if v == "" {
			v = "x"
		}
		f[name] = []string{v, v}
		if a := postForm(t, p, f, nil); a.status != 400 || a.str("error") != ErrInvalidRequest || a.str("error_description") != DescDuplicatedParameter {
			t.Errorf("%s twice: %d %s", name, a.status, a.raw)
		}
	}
	f := exchangeForm(userToken, APIClientID)
	f.Add("audience", APIClientID)
	if a := postForm(t, p, f, nil); a.status != 200 {
		t.Errorf("audience twice: %d %s", a.status, a.raw)
	}
}
