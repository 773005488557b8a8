package oauth

import (
	"encoding/base64"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

var (
	postClient  = Client{ID: testClient, Secret: testSecret}
	basicClient = Client{ID: testClient, Secret: testSecret, Basic: true}
)

// expectForm builds the expected body with the standard library, in the given order.
func expectForm(kv ...string) string {
	parts := make([]string, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		parts = append(parts, kv[i]+"="+url.QueryEscape(kv[i+1]))
	}
	return strings.Join(parts, "&")
}

func TestExchangeFormPost(t *testing.T) {
	got := string(ExchangeForm("abc.def.ghi", testAud, "profile email", postClient))
	want := "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange" +
		"&subject_token=abc.def.ghi" +
		"&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token" +
		"&audience=kagenti-api" +
		"&scope=profile+email" +
		"&client_id=token-exchange-filter" +
		"&client_secret=" + testSecret
	if got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
}

func TestExchangeFormFields(t *testing.T) {
	tests := []struct {
		name                     string
		subject, audience, scope string
		client                   Client
		want                     string
	}{
		{
			name: "post without scope", subject: testJWT, audience: testAud, client: postClient,
			want: expectForm("grant_type", GrantTypeTokenExchange, "subject_token", testJWT,
				"subject_token_type", TokenTypeAccessToken, "audience", testAud,
				"client_id", testClient, "client_secret", testSecret),
		},
		{
			name: "basic with scope", subject: testJWT, audience: testAud, scope: "openid agent:run", client: basicClient,
			want: expectForm("grant_type", GrantTypeTokenExchange, "subject_token", testJWT,
				"subject_token_type", TokenTypeAccessToken, "audience", testAud, "scope", "openid agent:run"),
		},
		{
			name: "basic without scope", subject: "t", audience: testAud, client: basicClient,
			want: expectForm("grant_type", GrantTypeTokenExchange, "subject_token", "t",
				"subject_token_type", TokenTypeAccessToken, "audience", testAud),
		},
		{
			name: "empty audience left out", subject: "t", client: basicClient,
			want: expectForm("grant_type", GrantTypeTokenExchange, "subject_token", "t",
				"subject_token_type", TokenTypeAccessToken),
		},
		{
			name: "reserved and non-ASCII everywhere", subject: "a+b/c=d&e%f g==", audience: "aud &=+/%é",
			scope: "s1 s2+s3&x=y 日本", client: Client{ID: "id with space&=+", Secret: "p@ss:w/rd+%20=é"},
			want: expectForm("grant_type", GrantTypeTokenExchange, "subject_token", "a+b/c=d&e%f g==",
				"subject_token_type", TokenTypeAccessToken, "audience", "aud &=+/%é",
				"scope", "s1 s2+s3&x=y 日本", "client_id", "id with space&=+", "client_secret", "p@ss:w/rd+%20=é"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := ExchangeForm(tc.subject, tc.audience, tc.scope, tc.client)
			if string(body) != tc.want {
				t.Fatalf("body\n got %s\nwant %s", body, tc.want)
			}
			if cap(body) != len(body) {
				t.Errorf("buffer not exactly sized: len %d cap %d", len(body), cap(body))
			}
			q, err := url.ParseQuery(string(body))
			if err != nil {
				t.Fatalf("ParseQuery: %v", err)
			}
			want := url.Values{
				"grant_type":         {GrantTypeTokenExchange},
				"subject_token":      {tc.subject},
				"subject_token_type": {TokenTypeAccessToken},
			}
			if tc.audience != "" {
				want.Set("audience", tc.audience)
			}
			if tc.scope != "" {
				want.Set("scope", tc.scope)
			}
			if !tc.client.Basic {
				want.Set("client_id", tc.client.ID)
				want.Set("client_secret", tc.client.Secret)
			}
			if !reflect.DeepEqual(q, want) {
				t.Errorf("round trip\n got %v\nwant %v", q, want)
			}
		})
	}
}

func TestClientCredentialsForm(t *testing.T) {
	if got, want := string(ClientCredentialsForm(basicClient)), "grant_type=client_credentials"; got != want {
		t.Errorf("basic: got %q want %q", got, want)
	}
	c := Client{ID: "my client", Secret: "a&b=c+d%e/é"}
	got := string(ClientCredentialsForm(c))
	if want := expectForm("grant_type", "client_credentials", "client_id", c.ID, "client_secret", c.Secret); got != want {
		t.Errorf("post: got %q want %q", got, want)
	}
	q, err := url.ParseQuery(got)
	if err != nil || q.Get("client_id") != c.ID || q.Get("client_secret") != c.Secret || len(q) != 3 {
		t.Errorf("round trip: %v %v", q, err)
	}
}

// Every byte value is encoded exactly as net/url does it.
func TestEscapeMatchesQueryEscape(t *testing.T) {
	var all [256]byte
	for i := range all {
		all[i] = byte(i)
	}
	s := string(all[:])
	if got, want := string(appendEscaped(nil, s)), url.QueryEscape(s); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if escapedLen(s) != len(url.QueryEscape(s)) {
		t.Fatalf("escapedLen %d, want %d", escapedLen(s), len(url.QueryEscape(s)))
	}
}

func TestExchangeFormAllocs(t *testing.T) {
	n := testing.AllocsPerRun(100, func() { ExchangeForm(testJWT, testAud, "profile", postClient) })
	if n != 1 {
		t.Errorf("allocations: %v, want 1", n)
	}
}

func TestRequestHeadersPost(t *testing.T) {
	e := Endpoint{Scheme: "https", Authority: "kc.example.com:8443", Path: "/realms/demo/protocol/openid-connect/token"}
	got := RequestHeaders(e, postClient)
	want := [][2]string{
		{":method", "POST"},
		{":path", "/realms/demo/protocol/openid-connect/token"},
		{":authority", "kc.example.com:8443"},
		{":scheme", "https"},
		{"content-type", "application/x-www-form-urlencoded"},
		{"accept", "application/json"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if RequestHeaders(Endpoint{Scheme: "http", Authority: "kc"}, postClient)[1][1] != "/" {
		t.Errorf("empty path not sent as /")
	}
}

func TestRequestHeadersBasic(t *testing.T) {
	e := Endpoint{Scheme: "http", Authority: "keycloak:8080", Path: "/realms/demo/protocol/openid-connect/token?x=1"}
	for _, c := range []Client{
		basicClient,
		{ID: "client:with colon", Secret: "p@ss:w/rd+%20=é ", Basic: true},
		{ID: "", Secret: "", Basic: true},
	} {
		h := RequestHeaders(e, c)
		if len(h) != 7 {
			t.Fatalf("%d headers, want 7: %v", len(h), h)
		}
		for _, kv := range h {
			if kv[0] != strings.ToLower(kv[0]) {
				t.Errorf("header name %q not lower-case", kv[0])
			}
			if c.Secret != "" && strings.Contains(kv[1], c.Secret) {
				t.Errorf("secret in clear in header %q", kv[0])
			}
		}
		if h[6][0] != "authorization" || !strings.HasPrefix(h[6][1], "Basic ") {
			t.Fatalf("no Basic authorization: %v", h[6])
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(h[6][1], "Basic "))
		if err != nil {
			t.Fatalf("base64: %v", err)
		}
		// RFC 6749 §2.3.1: form-encoded id and secret, so the first ':' is the separator.
		encID, encSecret, ok := strings.Cut(string(raw), ":")
		if !ok {
			t.Fatalf("no ':' in %q", raw)
		}
		id, err1 := url.QueryUnescape(encID)
		secret, err2 := url.QueryUnescape(encSecret)
		if err1 != nil || err2 != nil || id != c.ID || secret != c.Secret {
			t.Errorf("decoded %q:%q (%v %v), want %q:%q", id, secret, err1, err2, c.ID, c.Secret)
		}
	}
	// With only unreserved characters this is plain RFC 7617 Basic.
	h := RequestHeaders(e, basicClient)
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte(testClient+":"+testSecret)); h[6][1] != want {
		t.Errorf("got %q want %q", h[6][1], want)
	}
}
