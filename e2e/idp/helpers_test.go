package idp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	testKeyOnce sync.Once
	testKey     *rsa.PrivateKey
)

// start runs an IdP of DefaultConfig (changed by mod) for the test.
func start(t *testing.T, mod func(*Config)) *IdP {
	t.Helper()
	testKeyOnce.Do(func() {
		var err error
		if testKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	cfg := DefaultConfig()
	cfg.SigningKey = testKey
	if mod != nil {
		mod(&cfg)
	}
	p, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// answer is a token endpoint answer.
type answer struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func (a answer) str(k string) string { s, _ := a.body[k].(string); return s }

// postForm posts form to the token endpoint; basic, when non-nil, is {id, secret} for HTTP Basic.
func postForm(t *testing.T, p *IdP, form url.Values, basic []string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.TokenEndpoint(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic != nil {
		req.SetBasicAuth(url.QueryEscape(basic[0]), url.QueryEscape(basic[1]))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

// exchangeForm is the filter's token-exchange request (client_secret_post).
func exchangeForm(subjectToken, audience string) url.Values {
	f := url.Values{
		"grant_type":         {GrantTokenExchange},
		"subject_token":      {subjectToken},
		"subject_token_type": {TokenTypeAccessToken},
		"client_id":          {FilterClientID},
		"client_secret":      {FilterClientSecret},
	}
	if audience != "" {
		f.Set("audience", audience)
	}
	return f
}

func clientCredentialsForm(id, secret string) url.Values {
	return url.Values{"grant_type": {GrantClientCredentials}, "client_id": {id}, "client_secret": {secret}}
}

func passwordForm(clientID, username, password string) url.Values {
	return url.Values{"grant_type": {GrantPassword}, "client_id": {clientID}, "username": {username}, "password": {password}}
}

// mint returns a user token of kagenti-ui for username.
func mint(t *testing.T, p *IdP, username string) string {
	t.Helper()
	tok, err := p.MintUserToken(username, UIClientID)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func claimsOf(t *testing.T, token string) map[string]any {
	t.Helper()
	c, err := DecodeClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func audOf(c map[string]any) []string { return audienceOf(c) }

func expectError(t *testing.T, a answer, status int, code, desc string) {
	t.Helper()
	if a.status != status || a.str("error") != code {
		t.Fatalf("got %d %s, want %d %s", a.status, a.raw, status, code)
	}
	if desc != "" && a.str("error_description") != desc {
		t.Errorf("error_description %q, want %q", a.str("error_description"), desc)
	}
	for k := range a.body {
		if k != "error" && k != "error_description" {
			t.Errorf("unexpected field %q in error %s", k, a.raw)
		}
	}
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
