package idp

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

func logout(t *testing.T, p *IdP, hint string) int {
	t.Helper()
	resp, err := http.PostForm(p.Issuer()+LogoutPath, url.Values{"id_token_hint": {hint}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// After logout at the end-session endpoint, the session's access tokens are "Invalid token" for
// exchange although their exp is ahead; the user's other sessions are untouched.
func TestLogoutEndsTheSession(t *testing.T) {
	p := start(t, nil)
	first, second := mint(t, p, "alice"), mint(t, p, "alice")
	if a := postForm(t, p, exchangeForm(first, APIClientID), nil); a.status != 200 {
		t.Fatalf("before logout: %d %s", a.status, a.raw)
	}
	if st := logout(t, p, first); st != http.StatusNoContent {
		t.Fatalf("logout: %d", st)
	}
	if exp := claimsOf(t, first)["exp"].(float64); int64(exp) <= time.Now().Unix() {
		t.Fatal("the token expired: the test shows nothing")
	}
	expectError(t, postForm(t, p, exchangeForm(first, APIClientID), nil), 400, ErrInvalidRequest, DescInvalidToken)
	if a := postForm(t, p, exchangeForm(second, APIClientID), nil); a.status != 200 {
		t.Errorf("another session of the user: %d %s", a.status, a.raw)
	}
	if st := logout(t, p, "not-a-token"); st != http.StatusBadRequest {
		t.Errorf("logout with a bad hint: %d", st)
	}
	// Signing the user out everywhere ends every session.
	if n := p.Logout("alice"); n != 1 {
		t.Errorf("Logout ended %d sessions, want the 1 left", n)
	}
	expectError(t, postForm(t, p, exchangeForm(second, APIClientID), nil), 400, ErrInvalidRequest, DescInvalidToken)
}

// The exchanged token's lifetime is capped by what is left of the session (SSO Session Max);
// past it the session's tokens are "Invalid token".
func TestSessionMaxCapsAndEnds(t *testing.T) {
	p := start(t, nil)
	tok := mint(t, p, "bob")
	p.SetSessionMaxLifetime(90 * time.Second)
	a := postForm(t, p, exchangeForm(tok, APIClientID), nil)
	if a.status != 200 {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	exp := int64(claimsOf(t, a.str("access_token"))["exp"].(float64))
	if in := a.body["expires_in"].(float64); in > 90 || in < 85 || exp > time.Now().Add(91*time.Second).Unix() {
		t.Errorf("expires_in %v, exp in %ds: want both capped at the session's 90 s", in, exp-time.Now().Unix())
	}
	p.SetSessionMaxLifetime(time.Nanosecond) // the session is past its maximum now
	expectError(t, postForm(t, p, exchangeForm(tok, APIClientID), nil), 400, ErrInvalidRequest, DescInvalidToken)
}

// A login answers session_state; service-account tokens have no session.
func TestSessionState(t *testing.T) {
	p := start(t, nil)
	a := postForm(t, p, url.Values{"grant_type": {"password"}, "client_id": {FilterClientID}, "client_secret": {FilterClientSecret},
		"username": {"alice"}, "password": {"alice-password"}}, nil)
	if a.status != 200 {
		t.Fatalf("password grant: %d %s", a.status, a.raw)
	}
	if sid := claimsOf(t, a.str("access_token"))["sid"]; sid == nil || a.str("session_state") != sid {
		t.Errorf("password grant: session_state %q, sid %v", a.str("session_state"), sid)
	}
	cc := postForm(t, p, url.Values{"grant_type": {"client_credentials"}, "client_id": {FilterClientID}, "client_secret": {FilterClientSecret}}, nil)
	if cc.status != 200 || cc.str("session_state") != "" || claimsOf(t, cc.str("access_token"))["sid"] != nil {
		t.Errorf("client credentials: %d %s", cc.status, cc.raw)
	}
}

// Several audiences are a JSON array.
func TestSeveralAudiencesAreAnArray(t *testing.T) {
	p := start(t, nil)
	c, _ := p.Client(FilterClientID)
	c.Audiences = []string{APIClientID, UIClientID}
	if err := p.SetClient(c); err != nil {
		t.Fatal(err)
	}
	a := postForm(t, p, exchangeForm(mint(t, p, "alice"), ""), nil)
	if aud, ok := claimsOf(t, a.str("access_token"))["aud"].([]any); a.status != 200 || !ok || len(aud) != 2 {
		t.Errorf("%d aud %#v: want an array of two", a.status, claimsOf(t, a.str("access_token"))["aud"])
	}
}
