package oauth

import (
	"strconv"
	"strings"
	"testing"
)

// failureCase is one non-success answer and what must come of it.
type failureCase struct {
	name       string
	status     int
	numHeaders int // 0 means the usual 5
	body       []byte
	class      Class
	code       string
	desc       string // exact sanitised description; "*" = do not check
	strict     int
}

// keycloakErrors has every row of KEYCLOAK.md's error table, with the descriptions Keycloak
// sends (TokenEndpoint, StandardTokenExchangeProvider, AbstractTokenExchangeProvider,
// ClientAuthUtil).
var keycloakErrors = []failureCase{
	{name: "exchange disabled server-wide", status: 400,
		body:  oauthError("unsupported_grant_type", "Unsupported grant_type"),
		class: Configuration, code: "unsupported_grant_type", desc: "Unsupported grant_type", strict: 502},
	{name: "standard exchange not enabled for client", status: 400,
		body:  oauthError("invalid_request", "Standard token exchange is not enabled for the requested client"),
		class: Configuration, code: "invalid_request",
		desc: "Standard token exchange is not enabled for the requested client", strict: 401},
	{name: "subject token fails verification", status: 400,
		body:  oauthError("invalid_request", "Invalid token"),
		class: SubjectRejected, code: "invalid_request", desc: "Invalid token", strict: 401},
	{name: "subject token missing", status: 400,
		body:  oauthError("invalid_request", "subject_token parameter not provided"),
		class: SubjectRejected, code: "invalid_request", desc: "subject_token parameter not provided", strict: 401},
	{name: "subject token wrong type", status: 400,
		body:  oauthError("invalid_request", "Invalid token type, must be access token"),
		class: SubjectRejected, code: "invalid_request", desc: "Invalid token type, must be access token", strict: 401},
	{name: "public client", status: 400,
		body:  oauthError("invalid_client", "Public client is not allowed to exchange token"),
		class: Configuration, code: "invalid_client", desc: "Public client is not allowed to exchange token", strict: 502},
	{name: "audience client disabled", status: 400,
		body:  oauthError("invalid_client", "Client disabled"),
		class: Configuration, code: "invalid_client", desc: "Client disabled", strict: 502},
	{name: "unknown audience", status: 400,
		body:  oauthError("invalid_client", "Audience not found"),
		class: Configuration, code: "invalid_client", desc: "Audience not found", strict: 502},
	// Realm set-up errors dressed as a user's: every user fails alike (KEYCLOAK.md).
	{name: "audience not available (realm set-up)", status: 400,
		body:  oauthError("invalid_request", "Requested audience not available: kagenti-api"),
		class: Configuration, code: "invalid_request", desc: "Requested audience not available: kagenti-api", strict: 401},
	{name: "V1 answering: client not allowed to exchange", status: 403,
		body:  oauthError("access_denied", "Client not allowed to exchange"),
		class: Configuration, code: "access_denied", desc: "Client not allowed to exchange", strict: 401},
	{name: "realm disabled", status: 403,
		body:  oauthError("access_denied", "Realm not enabled"),
		class: Configuration, code: "access_denied", desc: "Realm not enabled", strict: 401},
	{name: "HTTPS required", status: 403,
		body:  oauthError("invalid_request", "HTTPS required"),
		class: Configuration, code: "invalid_request", desc: "HTTPS required", strict: 502},
	{name: "a user's invalid token stays the user's", status: 400,
		body:  oauthError("invalid_request", "Invalid token"),
		class: SubjectRejected, code: "invalid_request", desc: "Invalid token", strict: 401},
	{name: "bad scope", status: 400,
		body:  oauthError("invalid_scope", "Invalid scopes: agent:admin"),
		class: Configuration, code: "invalid_scope", desc: "Invalid scopes: agent:admin", strict: 502},
	{name: "missing consent", status: 400,
		body:  oauthError("invalid_scope", "Missing consents for Token Exchange in client token-exchange-filter"),
		class: Configuration, code: "invalid_scope",
		desc: "Missing consents for Token Exchange in client token-exchange-filter", strict: 502},
	{name: "requester not in subject audience", status: 403,
		body:  oauthError("access_denied", "Client is not within the token audience"),
		class: SubjectRejected, code: "access_denied", desc: "Client is not within the token audience", strict: 401},
	{name: "wrong client secret", status: 401,
		body:  oauthError("unauthorized_client", "Invalid client or Invalid client credentials"),
		class: Configuration, code: "unauthorized_client", desc: "Invalid client or Invalid client credentials", strict: 502},
	{name: "unknown or disabled client", status: 401,
		body:  oauthError("invalid_client", "Invalid client or Invalid client credentials"),
		class: Configuration, code: "invalid_client", desc: "Invalid client or Invalid client credentials", strict: 502},
}

// otherFailures covers the rest of BEHAVIOUR.md scenarios 6 and 7 and every answer that is not
// the protocol.
var otherFailures = []failureCase{
	{name: "invalid_grant", status: 400, body: oauthError("invalid_grant", "Invalid token"),
		class: SubjectRejected, code: "invalid_grant", desc: "Invalid token", strict: 401},
	{name: "invalid_token", status: 400, body: oauthError("invalid_token", "Token is not active"),
		class: SubjectRejected, code: "invalid_token", desc: "Token is not active", strict: 401},
	{name: "not enabled in other words and case", status: 400,
		body:  oauthError("invalid_request", "TOKEN EXCHANGE IS NOT ENABLED here"),
		class: Configuration, code: "invalid_request", desc: "TOKEN EXCHANGE IS NOT ENABLED here", strict: 401},
	{name: "invalid_request without description", status: 400, body: []byte(`{"error":"invalid_request"}`),
		class: SubjectRejected, code: "invalid_request", desc: "", strict: 401},
	{name: "upper-case code", status: 400, body: oauthError("INVALID_GRANT", "x"),
		class: SubjectRejected, code: "invalid_grant", desc: "x", strict: 401},
	{name: "access_denied with 400", status: 400, body: oauthError("access_denied", "nope"),
		class: Configuration, code: "access_denied", desc: "nope", strict: 502},
	{name: "invalid_request with 401", status: 401, body: oauthError("invalid_request", "x"),
		class: Configuration, code: "invalid_request", desc: "x", strict: 502},
	{name: "invalid_grant with 403", status: 403, body: oauthError("invalid_grant", "x"),
		class: Configuration, code: "invalid_grant", desc: "x", strict: 502},
	{name: "404 html", status: 404, body: []byte("<html><body>Not Found</body></html>"),
		class: Configuration, desc: "<html><body>Not Found</body></html>", strict: 502},
	{name: "4xx JSON without error", status: 400, body: []byte(`{"message":"bad request"}`),
		class: Configuration, desc: "", strict: 502},
	{name: "4xx error not a string", status: 400, body: []byte(`{"error":42,"error_description":["x"]}`),
		class: Configuration, desc: "", strict: 502},
	{name: "4xx empty body", status: 400, body: nil, class: Configuration, strict: 502},
	{name: "405 from a proxy", status: 405, body: []byte("Method Not Allowed"),
		class: Configuration, desc: "Method Not Allowed", strict: 502},
	{name: "429", status: 429, body: []byte(`{"error":"slow_down","error_description":"Too many requests"}`),
		class: Transient, code: "slow_down", desc: "Too many requests", strict: 502},
	{name: "429 plain", status: 429, body: []byte("Too Many Requests"),
		class: Transient, desc: "Too Many Requests", strict: 502},
	{name: "500 Keycloak", status: 500, body: oauthError("unknown_error", "For more on this error consult the server log."),
		class: Transient, code: "unknown_error", desc: "For more on this error consult the server log.", strict: 502},
	{name: "503 temporarily_unavailable", status: 503, body: oauthError("temporarily_unavailable", "maintenance"),
		class: Transient, code: "temporarily_unavailable", desc: "maintenance", strict: 502},
	{name: "Envoy 503 connect error", status: 503, body: []byte(envoyConnectError),
		class: Transient, desc: envoyConnectError, strict: 502},
	{name: "Envoy 504 timeout", status: 504, body: []byte(envoyTimeout),
		class: Transient, desc: envoyTimeout, strict: 502},
	{name: "502 html page", status: 502, body: []byte(htmlPage),
		class: Transient, strict: 502,
		desc: "<html> <head><title>502 Bad Gateway</title></head> <body> <center><h1>502 Bad Gateway</h1></center> <hr><center>nginx</center> </body> </html>"},
	{name: "599", status: 599, body: nil, class: Transient, strict: 502},
	{name: "0 headers", status: 0, numHeaders: -1, body: nil,
		class: Transient, desc: descReset, strict: 502},
	{name: "0 headers whatever the status", status: 200, numHeaders: -1, body: successBody(testJWT, "300"),
		class: Transient, desc: descReset, strict: 502},
	{name: "200 html page", status: 200, body: []byte(htmlPage), class: Malformed, desc: descNotJSON, strict: 502},
	{name: "200 empty body", status: 200, body: nil, class: Malformed, desc: descEmpty, strict: 502},
	{name: "200 blank body", status: 200, body: []byte(" \r\n"), class: Malformed, desc: descEmpty, strict: 502},
	{name: "200 without access_token", status: 200, body: []byte(`{"token_type":"Bearer","expires_in":300}`),
		class: Malformed, desc: descNoToken, strict: 502},
	{name: "200 error body", status: 200, body: oauthError("invalid_request", "x"),
		class: Malformed, desc: descNoToken, strict: 502},
	{name: "200 access_token number", status: 200, body: []byte(`{"access_token":12345}`),
		class: Malformed, desc: descTokenType, strict: 502},
	{name: "200 access_token null", status: 200, body: []byte(`{"access_token":null}`),
		class: Malformed, desc: descTokenType, strict: 502},
	{name: "200 access_token object", status: 200, body: []byte(`{"access_token":{"v":"abc"}}`),
		class: Malformed, desc: descTokenType, strict: 502},
	{name: "200 access_token empty", status: 200, body: []byte(`{"access_token":""}`),
		class: Malformed, desc: descTokenShape, strict: 502},
	{name: "200 access_token with space", status: 200, body: []byte(`{"access_token":"abc def"}`),
		class: Malformed, desc: descTokenShape, strict: 502},
	{name: "200 access_token with escaped newline", status: 200, body: []byte(`{"access_token":"abc\ndef"}`),
		class: Malformed, desc: descTokenShape, strict: 502},
	{name: "200 access_token with inner =", status: 200, body: []byte(`{"access_token":"abc=def"}`),
		class: Malformed, desc: descTokenShape, strict: 502},
	{name: "200 access_token non-ASCII", status: 200, body: []byte(`{"access_token":"tökén"}`),
		class: Malformed, desc: descTokenShape, strict: 502},
	{name: "200 access_token too long", status: 200,
		body:  successBody(strings.Repeat("a", MaxTokenBytes+1), "300"),
		class: Malformed, desc: descTokenShape, strict: 502},
	{name: "200 JSON array", status: 200, body: []byte(`[{"access_token":"abc"}]`),
		class: Malformed, desc: descNotJSON, strict: 502},
	{name: "200 truncated JSON", status: 200, body: successBody(testJWT, "300")[:200],
		class: Malformed, desc: descNotJSON, strict: 502},
	{name: "200 trailing garbage", status: 200, body: append(successBody(testJWT, "300"), "x"...),
		class: Malformed, desc: descNotJSON, strict: 502},
	{name: "200 form-encoded answer", status: 200, body: []byte("access_token=" + testOpaque + "&expires_in=300"),
		class: Malformed, desc: descNotJSON, strict: 502},
	{name: "200 nested too deep", status: 200,
		body:  []byte(`{"access_token":"abc","x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`),
		class: Malformed, desc: descNotJSON, strict: 502},
	{name: "200 oversize", status: 200,
		body:  append(successBody(testJWT, "300")[:20], strings.Repeat(" ", MaxBodyBytes)...),
		class: Malformed, desc: descOversize, strict: 502},
	{name: "400 oversize", status: 400, body: []byte(strings.Repeat("x", MaxBodyBytes+1)),
		class: Malformed, desc: descOversize, strict: 502},
	{name: "503 oversize stays transient", status: 503, body: []byte(strings.Repeat("x", MaxBodyBytes+1)),
		class: Transient, desc: descOversize, strict: 502},
	{name: "100", status: 100, body: nil, class: Malformed, desc: descOddStatus, strict: 502},
	{name: "302 redirect", status: 302, body: []byte("<a href=\"/login\">Found</a>"),
		class: Malformed, desc: descOddStatus, strict: 502},
	{name: "status 0 with headers", status: 0, body: successBody(testJWT, "300"),
		class: Malformed, desc: descOddStatus, strict: 502},
	{name: "status 600", status: 600, body: nil, class: Malformed, desc: descOddStatus, strict: 502},
	{name: "negative status", status: -200, body: nil, class: Malformed, desc: descOddStatus, strict: 502},
}

func checkFailure(t *testing.T, tc failureCase) {
	t.Helper()
	nh := tc.numHeaders
	switch nh {
	case 0:
		nh = 5
	case -1:
		nh = 0
	}
	tok, f := ParseResponse(tc.status, nh, tc.body, testNowMs)
	if f == nil {
		t.Fatalf("no failure; token %.20q", tok.AccessToken)
	}
	if tok != (Token{}) {
		t.Errorf("token alongside failure: %+v", tok)
	}
	if f.Class != tc.class {
		t.Errorf("class %v, want %v (%s)", f.Class, tc.class, f)
	}
	if f.Code != tc.code {
		t.Errorf("code %q, want %q", f.Code, tc.code)
	}
	if tc.desc != "*" && f.Description != tc.desc {
		t.Errorf("description\n got %q\nwant %q", f.Description, tc.desc)
	}
	wantStatus := tc.status
	if nh == 0 {
		wantStatus = 0
	}
	if f.Status != wantStatus {
		t.Errorf("status %d, want %d", f.Status, wantStatus)
	}
	if got := f.StrictStatus(); got != tc.strict {
		t.Errorf("StrictStatus %d, want %d", got, tc.strict)
	}
}

func TestKeycloakErrors(t *testing.T) {
	for _, tc := range keycloakErrors {
		t.Run(tc.name, func(t *testing.T) { checkFailure(t, tc) })
	}
}

func TestOtherFailures(t *testing.T) {
	for _, tc := range otherFailures {
		t.Run(tc.name, func(t *testing.T) { checkFailure(t, tc) })
	}
}

// Class and StrictStatus agree except for Keycloak's set-up errors dressed as a user's (400
// invalid_request, 403 access_denied), which the contract sends to 401 by their codes although
// no user will ever succeed.
func TestStrictStatusFollowsClass(t *testing.T) {
	for _, tc := range append(append([]failureCase{}, keycloakErrors...), otherFailures...) {
		if (tc.class == SubjectRejected) != (tc.strict == 401) && !setupError(tc.desc) {
			t.Errorf("%s: class %v with strict %d", tc.name, tc.class, tc.strict)
		}
	}
	var nilFailure *Failure
	if nilFailure.StrictStatus() != 502 || nilFailure.String() != "<nil>" {
		t.Errorf("nil failure")
	}
}

type successCase struct {
	name      string
	status    int
	body      []byte
	token     string
	expiresIn int64
	hasExpiry bool
}

var successes = []successCase{
	{name: "token exchange", status: 200, body: successBody(testJWT, "300"),
		token: testJWT, expiresIn: 300, hasExpiry: true},
	{name: "client credentials", status: 200,
		body: []byte(`{"access_token":"` + testJWT + `","expires_in":60,"refresh_expires_in":0,` +
			`"token_type":"Bearer","not-before-policy":0,"scope":"profile email"}`),
		token: testJWT, expiresIn: 60, hasExpiry: true},
	{name: "201 and white space", status: 201, body: []byte("\n { \"access_token\" : \"abc\" , \"expires_in\" : 5 } \n"),
		token: "abc", expiresIn: 5, hasExpiry: true},
	{name: "expires_in string", status: 200, body: successBody(testOpaque, `"3600"`),
		token: testOpaque, expiresIn: 3600, hasExpiry: true},
	{name: "expires_in fraction truncated", status: 200, body: successBody(testOpaque, "299.9"),
		token: testOpaque, expiresIn: 299, hasExpiry: true},
	{name: "expires_in exponent", status: 200, body: successBody(testOpaque, "3e2"),
		token: testOpaque, expiresIn: 300, hasExpiry: true},
	{name: "expires_in huge is clamped", status: 200, body: successBody(testOpaque, "1e300"),
		token: testOpaque, expiresIn: MaxExpiresIn, hasExpiry: true},
	{name: "expires_in huge string is clamped", status: 200, body: successBody(testOpaque, `"99999999999999999999"`),
		token: testOpaque, expiresIn: MaxExpiresIn, hasExpiry: true},
	{name: "no expires_in, JWT exp", status: 200, body: successBody(testJWT, ""),
		token: testJWT, expiresIn: 300, hasExpiry: true},
	{name: "expires_in 0, JWT exp", status: 200, body: successBody(testJWT, "0"),
		token: testJWT, expiresIn: 300, hasExpiry: true},
	{name: "expires_in negative, JWT exp", status: 200, body: successBody(testJWT, "-5"),
		token: testJWT, expiresIn: 300, hasExpiry: true},
	{name: "expires_in garbage string, JWT exp", status: 200, body: successBody(testJWT, `"soon"`),
		token: testJWT, expiresIn: 300, hasExpiry: true},
	{name: "expires_in signed string, JWT exp", status: 200, body: successBody(testJWT, `"+300"`),
		token: testJWT, expiresIn: 300, hasExpiry: true},
	{name: "expires_in null, JWT exp", status: 200, body: successBody(testJWT, "null"),
		token: testJWT, expiresIn: 300, hasExpiry: true},
	{name: "expired JWT", status: 200, body: successBody(expiredJWT, ""),
		token: expiredJWT, expiresIn: -10, hasExpiry: true},
	{name: "JWT exp in float notation", status: 200, body: successBody(floatExpJWT, ""),
		token: floatExpJWT, expiresIn: 120, hasExpiry: true},
	{name: "JWT with padded signature", status: 200, body: successBody(paddedJWT, ""),
		token: paddedJWT, expiresIn: 300, hasExpiry: true},
	{name: "JWT exp as string is not used", status: 200, body: successBody(stringExpJWT, ""),
		token: stringExpJWT},
	{name: "JWT without exp", status: 200, body: successBody(noExpJWT, ""),
		token: noExpJWT},
	{name: "JWT payload not JSON", status: 200, body: successBody(badPayloadJWT, ""),
		token: badPayloadJWT},
	{name: "four segments", status: 200, body: successBody(testJWT+".x", ""),
		token: testJWT + ".x"},
	{name: "standard base64 segments are not a JWT", status: 200, body: successBody("ab+c.de/f.ghi", ""),
		token: "ab+c.de/f.ghi"},
	{name: "opaque token without expiry", status: 200, body: successBody(testOpaque, ""),
		token: testOpaque},
	{name: "escaped characters in token", status: 200, body: []byte(`{"access_token":"a\/b\u002ec"}`),
		token: "a/b.c"},
	{name: "first access_token wins", status: 200, body: []byte(`{"access_token":"first","access_token":"second"}`),
		token: "first"},
	{name: "other fields of any type ignored", status: 200,
		body:  []byte(`{"x":{"y":[1,2,{"z":null}]},"access_token":"abc","error":"invalid_grant","expires_in":7}`),
		token: "abc", expiresIn: 7, hasExpiry: true},
}

var (
	expiredJWT    = makeJWT(`{"exp":` + strconv.FormatInt(testNowSec-10, 10) + `}`)
	floatExpJWT   = makeJWT(`{"exp":` + strconv.FormatInt(testNowSec+120, 10) + `.75}`)
	stringExpJWT  = makeJWT(`{"exp":"` + strconv.FormatInt(testNowSec+120, 10) + `"}`)
	noExpJWT      = makeJWT(`{"sub":"ada"}`)
	badPayloadJWT = makeJWT(`exp: 5`)
	paddedJWT     = testJWT + "=="
)

func TestSuccess(t *testing.T) {
	for _, tc := range successes {
		t.Run(tc.name, func(t *testing.T) {
			tok, f := ParseResponse(tc.status, 4, tc.body, testNowMs)
			if f != nil {
				t.Fatalf("failure: %s", f)
			}
			want := Token{AccessToken: tc.token, ExpiresIn: tc.expiresIn, HasExpiry: tc.hasExpiry}
			if tok != want {
				t.Errorf("got %+v\nwant %+v", tok, want)
			}
		})
	}
}

func TestJWTExpiryTolerance(t *testing.T) {
	// The token68 rule keeps '=' out of the middle of a token, but the decoder itself takes a
	// padded payload.
	p := "eyJleHAiOjEwMH0" // {"exp":100}
	for _, tok := range []string{"eyJhIjoxfQ." + p + ".sig", "eyJhIjoxfQ." + p + "=.sig", "eyJhIjoxfQ." + p + ".", "eyJhIjoxfQ==." + p + "==.c2ln=="} {
		if n, ok := jwtExpiresIn(tok, 40_000); !ok || n != 60 {
			t.Errorf("%s: %d %v", tok, n, ok)
		}
	}
	for _, tok := range []string{"." + p + ".sig", "eyJhIjoxfQ..sig", "eyJhIjoxfQ." + p, "a." + p + ".b.c", "eyJhIjoxfQ." + p + "!.sig"} {
		if _, ok := jwtExpiresIn(tok, 40_000); ok {
			t.Errorf("%s: accepted", tok)
		}
	}
	// Extreme exp values are clamped, never overflow.
	for exp, want := range map[string]int64{"1e300": MaxExpiresIn, "-1e300": -MaxExpiresIn, "9223372036854775807": MaxExpiresIn} {
		tok := makeJWT(`{"exp":` + exp + `}`)
		if n, ok := jwtExpiresIn(tok, testNowMs); !ok || n != want {
			t.Errorf("exp %s: %d %v", exp, n, ok)
		}
	}
}

// The token must not pin the callout body, and the body may be reused by the caller.
func TestTokenDoesNotAliasBody(t *testing.T) {
	body := successBody(testJWT, "300")
	tok, f := ParseResponse(200, 3, body, testNowMs)
	if f != nil {
		t.Fatal(f)
	}
	for i := range body {
		body[i] = 'x'
	}
	if tok.AccessToken != testJWT {
		t.Fatalf("token changed with the body")
	}
}

func TestSanitizeText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Invalid token", "Invalid token"},
		{"  lead and trail \r\n", "lead and trail"},
		{"line1\nline2\ttab\x00nul\x7fdel", "line1 line2 tab nul del"},
		{"many     spaces", "many spaces"},
		{"café ünïcode 日本", "caf? ?n?code ??"},
		{"stray \x80\xbf continuation", "stray continuation"},
		{"token " + testJWT + " echoed", "token [redacted] echoed"},
		{"Bearer " + testOpaque, "Bearer [redacted]"},
		{"secret=" + testSecret, "[redacted]"},
		{strings.Repeat("a", 23), strings.Repeat("a", 23)},
		{strings.Repeat("a", 24), "[redacted]"},
		{"abcdefghijkl\x80mnopqrstuvwxyz", "[redacted]"}, // a dropped byte does not split a run
		{"abcdefghijkl\x01mnopqrstuvwxyz", "abcdefghijkl mnopqrstuvwxyz"},
		{"http://kc.example.com/realms/demo", "http:[redacted]"},
		{strings.Repeat("word ", 100), strings.TrimSpace(strings.Repeat("word ", 32))},
	}
	for _, tc := range tests {
		if got := sanitizeText(tc.in); got != tc.want {
			t.Errorf("sanitizeText(%.60q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
	// The cap never cuts "[redacted]" in half, and it holds with redactions in the way.
	long := strings.Repeat("x ", 75) + testJWT + " tail"
	if got := sanitizeText(long); len(got) > MaxDescriptionBytes || strings.Contains(got, "[red") != strings.Contains(got, redacted) {
		t.Errorf("cap: %d %q", len(got), got)
	}
}

func TestSanitizeCode(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"invalid_grant", "invalid_grant"},
		{"Invalid_Grant", "invalid_grant"},
		{"invalid grant", "invalid_grant"},
		{"err\x00or\"<>", "err_or___"},
		{"urn.x-y_1", "urn.x-y_1"},
		{"temporarily_unavailable", "temporarily_unavailable"}, // 23 bytes: kept
		{"invalid_authorization_details", "redacted"},          // 29 bytes: could be a token
		{testJWT, "redacted"},
		{testSecret, "redacted"},
	}
	for _, tc := range tests {
		if got := sanitizeCode(tc.in); got != tc.want {
			t.Errorf("sanitizeCode(%.40q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Whatever the IdP puts in an error, the failure that comes out of it holds none of the secrets.
func TestFailureNeverLeaks(t *testing.T) {
	secrets := []string{testJWT, testOpaque, testSecret, testSubject}
	var cases []failureCase
	cases = append(cases, keycloakErrors...)
	cases = append(cases, otherFailures...)
	for _, s := range secrets {
		for _, st := range []int{200, 400, 401, 403, 429, 502, 504} {
			cases = append(cases,
				failureCase{status: st, body: oauthError("invalid_grant", "Invalid token: "+s)},
				failureCase{status: st, body: oauthError(s, s)},
				failureCase{status: st, body: oauthError("x", "a\x00"+s+"\nb")},
				failureCase{status: st, body: []byte("<html>" + s + "</html>")},
				failureCase{status: st, body: []byte(s)},
				failureCase{status: st, body: []byte(`{"access_token":"` + s + ` ","error":"` + s + `"}`)},
				failureCase{status: st, body: []byte(`{"access_token":` + strconv.Quote(s+"\x01") + `}`)},
			)
		}
	}
	for _, tc := range cases {
		_, f := ParseResponse(tc.status, 3, tc.body, testNowMs)
		if f == nil {
			continue
		}
		line := f.String()
		for _, s := range secrets {
			for _, part := range []string{s, s[:minRedactRun], s[len(s)-minRedactRun:]} {
				if strings.Contains(line, part) || strings.Contains(f.Code, part) || strings.Contains(f.Description, part) {
					t.Errorf("%d %.60q: %q leaks %.30q", tc.status, tc.body, line, part)
				}
			}
		}
	}
}

func TestFailureString(t *testing.T) {
	tests := []struct {
		f    Failure
		want string
	}{
		{Failure{Class: SubjectRejected, Status: 400, Code: "invalid_grant", Description: "Invalid token"},
			`class=subject_rejected status=400 error=invalid_grant description="Invalid token"`},
		{Failure{Class: Transient}, `class=transient status=0`},
		{Failure{Class: Malformed, Status: 200, Description: `say "hi" \o/`},
			`class=malformed status=200 description="say \"hi\" \\o/"`},
		{Failure{Class: Configuration, Status: 401, Code: "invalid_client"},
			`class=configuration status=401 error=invalid_client`},
		{Failure{Class: 0, Status: 1}, `class=unknown status=1`},
	}
	for _, tc := range tests {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}

// Every set-up error Keycloak dresses as a user's is Configuration and comes with the setting
// to change; a user's own "Invalid token" has none.
func TestSetupHints(t *testing.T) {
	for _, desc := range []string{"Requested audience not available: kagenti-api", "Standard token exchange is not enabled for the requested client",
		"Client not allowed to exchange", "Realm not enabled", "HTTPS required", "Audience not found"} {
		if SetupHint(desc) == "" {
			t.Errorf("%q: no hint", desc)
		}
		if c := classify4xx(400, "invalid_request", desc); c != Configuration {
			t.Errorf("%q: class %v", desc, c)
		}
	}
	if h := SetupHint("Invalid token"); h != "" {
		t.Errorf("a user's invalid token got a set-up hint: %q", h)
	}
}
