package oauth

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func FuzzParseResponse(f *testing.F) {
	for _, tc := range keycloakErrors {
		f.Add(tc.status, 5, tc.body)
	}
	for _, tc := range otherFailures {
		if len(tc.body) <= 4096 { // the corpus is for shapes, not sizes
			f.Add(tc.status, 5, tc.body)
		}
	}
	for _, tc := range successes {
		f.Add(tc.status, 5, tc.body)
	}
	f.Add(200, 0, successBody(testJWT, "300"))
	f.Add(400, 5, oauthError("invalid_request", "echo "+testJWT+"\x00\u00e9"))

	f.Fuzz(func(t *testing.T, status int, numHeaders int, body []byte) {
		tok, fail := ParseResponse(status, numHeaders, body, testNowMs)
		if fail == nil {
			if !ValidUserToken(tok.AccessToken) {
				t.Fatalf("success with unusable token %.60q", tok.AccessToken)
			}
			if !tok.HasExpiry && tok.ExpiresIn != 0 {
				t.Fatalf("ExpiresIn %d without expiry", tok.ExpiresIn)
			}
			if tok.ExpiresIn > MaxExpiresIn || tok.ExpiresIn < -MaxExpiresIn {
				t.Fatalf("ExpiresIn %d out of bounds", tok.ExpiresIn)
			}
			if status < 200 || status > 299 || numHeaders <= 0 {
				t.Fatalf("success for status %d, %d headers", status, numHeaders)
			}
			return
		}
		if tok != (Token{}) {
			t.Fatalf("token alongside failure %s", fail)
		}
		if fail.Class < Transient || fail.Class > Malformed {
			t.Fatalf("class %d", fail.Class)
		}
		if len(fail.Code) > MaxCodeBytes || longestTokenRun(fail.Code) >= minRedactRun {
			t.Fatalf("code %q", fail.Code)
		}
		for i := 0; i < len(fail.Code); i++ {
			c := fail.Code[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
				t.Fatalf("code %q has %q", fail.Code, c)
			}
		}
		d := fail.Description
		if len(d) > MaxDescriptionBytes || longestTokenRun(d) >= minRedactRun {
			t.Fatalf("description %q", d)
		}
		for i := 0; i < len(d); i++ {
			if d[i] < 0x20 || d[i] > 0x7e {
				t.Fatalf("description %q has byte %#x", d, d[i])
			}
		}
		if s := fail.StrictStatus(); s != 401 && s != 502 {
			t.Fatalf("strict status %d", s)
		}
		if line := fail.String(); strings.ContainsAny(line, "\r\n") {
			t.Fatalf("log line %q", line)
		}
	})
}

// longestTokenRun is the length of the longest run of token characters in s.
func longestTokenRun(s string) int {
	best, n := 0, 0
	for i := 0; i < len(s); i++ {
		if isTokenChar(s[i]) {
			n++
			best = max(best, n)
		} else {
			n = 0
		}
	}
	return best
}

func FuzzExchangeForm(f *testing.F) {
	f.Add(testJWT, testAud, "profile email", testClient, testSecret, false)
	f.Add("a+b/c=d&e%f g==", "aud &=+/%é", "s1;s2", "id:x", "p@ss:w/rd", true)
	f.Fuzz(func(t *testing.T, subject, audience, scope, id, secret string, basic bool) {
		c := Client{ID: id, Secret: secret, Basic: basic}
		body := ExchangeForm(subject, audience, scope, c)
		q, err := url.ParseQuery(string(body))
		if err != nil {
			t.Fatalf("ParseQuery(%q): %v", body, err)
		}
		want := url.Values{
			"grant_type":         {GrantTypeTokenExchange},
			"subject_token":      {subject},
			"subject_token_type": {TokenTypeAccessToken},
		}
		if audience != "" {
			want.Set("audience", audience)
		}
		if scope != "" {
			want.Set("scope", scope)
		}
		if !basic {
			want.Set("client_id", id)
			want.Set("client_secret", secret)
		}
		if !reflect.DeepEqual(q, want) {
			t.Fatalf("round trip\n got %q\nwant %q", q, want)
		}
	})
}
