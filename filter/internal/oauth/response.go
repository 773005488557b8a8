package oauth

import (
	"encoding/base64"
	"math"
	"strings"

	"github.com/tidwall/gjson"
)

// maxJSONDepth bounds the nesting accepted before gjson's validator (which recurses) sees a body:
// OAuth answers are flat, and a 64 KiB "[[[[…" should not grow the stack of a Wasm VM.
const maxJSONDepth = 32

// Descriptions of failures the IdP did not describe itself. They are ours, so they are fixed
// strings; tests and log searches can rely on them.
const (
	descReset       = "no response headers (reset, or body over the callout limit)"
	descOversize    = "body larger than 65536 bytes"
	descEmpty       = "empty body"
	descNotJSON     = "body is not a JSON object"
	descNoToken     = "no access_token"
	descTokenType   = "access_token is not a string"
	descTokenShape  = "access_token is empty, too long or not token68"
	descOddStatus   = "unexpected status"
	notEnabledMatch = "token exchange is not enabled"
)

// ParseResponse interprets the answer to a callout: status is the value of ":status" (0 when
// absent or unparsable), numHeaders the header count Envoy reported, body the whole body, and
// nowMs the wall clock, used only to turn a JWT "exp" into a lifetime. Exactly one result is
// meaningful: a nil *Failure means the Token holds a usable access token.
//
// Order of decisions, each documented where it is made:
//  1. numHeaders ≤ 0 is Envoy's reset-after-headers or over-limit body: Transient, Status 0.
//  2. 429 and 5xx are Transient whatever the body, Envoy's own 503/504 and HTML pages included;
//     this holds even for a body over MaxBodyBytes, since a retry later is still the right move.
//  3. Any other body over MaxBodyBytes is Malformed.
//  4. 2xx must carry a usable access_token, else Malformed.
//  5. 4xx is SubjectRejected or Configuration by status and OAuth error code.
//  6. Anything else (1xx, 3xx, out of range) is Malformed: the callout does not follow redirects.
//
// body is not retained: the returned strings are copies.
func ParseResponse(status int, numHeaders int, body []byte, nowMs int64) (Token, *Failure) {
	return ParseResponseRedacting(status, numHeaders, body, nowMs, nil, "")
}

// ParseResponseRedacting is ParseResponse with the client's secret (r) and extra (the user
// token of an exchange) removed from every text of a failure before it is sanitised and cut.
func ParseResponseRedacting(status int, numHeaders int, body []byte, nowMs int64, r *Redactor, extra string) (Token, *Failure) {
	if numHeaders <= 0 {
		return Token{}, &Failure{Class: Transient, Description: descReset}
	}
	transient := status == 429 || (status >= 500 && status <= 599)
	if len(body) > MaxBodyBytes {
		f := &Failure{Class: Malformed, Status: status, Description: descOversize}
		if transient {
			f.Class = Transient
		}
		return Token{}, f
	}
	switch {
	case transient:
		f, _ := errorFailure(status, body, r, extra)
		f.Class = Transient
		return Token{}, f
	case status >= 200 && status <= 299:
		return parseSuccess(status, body, nowMs)
	case status >= 400 && status <= 499:
		f, rawDesc := errorFailure(status, body, r, extra)
		f.Class = classify4xx(status, f.Code, rawDesc)
		return Token{}, f
	default:
		return Token{}, &Failure{Class: Malformed, Status: status, Description: descOddStatus}
	}
}

// classify4xx decides on the sanitised (lower-cased) code, the same value StrictStatus looks at,
// so that Class and the strict-mode status cannot disagree about what the IdP said.
func classify4xx(status int, code, rawDesc string) Class {
	switch {
	case setupError(rawDesc):
		// Keycloak reports realm set-up mistakes (the client's "Standard token exchange" switch
		// off, an audience it does not map, ...) with a user's codes; no user's token will work.
		return Configuration
	case status == 400 && code == "invalid_request":
		return SubjectRejected
	case status == 400 && (code == "invalid_grant" || code == "invalid_token"):
		return SubjectRejected
	case status == 403 && code == "access_denied":
		return SubjectRejected
	default:
		return Configuration
	}
}

// errorFailure reads an error answer. A JSON object gives Code and Description from "error" and
// "error_description" (each only if a string); any other non-blank body (Envoy's "upstream
// request timeout", an HTML page of a proxy) gives a sanitised excerpt as Description, which is
// what an operator needs to see. rawDesc is the unsanitised error_description, for matching only.
func errorFailure(status int, body []byte, r *Redactor, extra string) (f *Failure, rawDesc string) {
	f = &Failure{Status: status}
	if isJSONObject(body) {
		if e := gjson.GetBytes(body, "error"); e.Type == gjson.String {
			if code := r.apply(e.Str, extra); code != e.Str {
				f.Code = "redacted"
			} else {
				f.Code = sanitizeCode(e.Str)
			}
		}
		if d := gjson.GetBytes(body, "error_description"); d.Type == gjson.String {
			rawDesc = d.Str
			f.Description = sanitizeText(r.apply(d.Str, extra))
		}
		return f, rawDesc
	}
	f.Description = sanitizeText(r.apply(string(body), extra))
	return f, ""
}

func parseSuccess(status int, body []byte, nowMs int64) (Token, *Failure) {
	malformed := func(desc string) (Token, *Failure) {
		return Token{}, &Failure{Class: Malformed, Status: status, Description: desc}
	}
	if isBlank(body) {
		return malformed(descEmpty)
	}
	if !isJSONObject(body) {
		return malformed(descNotJSON)
	}
	// GetBytes copies the value out of body (Str shares that copy), so the token does not pin
	// the whole body in memory.
	at := gjson.GetBytes(body, "access_token")
	switch {
	case !at.Exists():
		return malformed(descNoToken)
	case at.Type != gjson.String:
		return malformed(descTokenType)
	case !ValidUserToken(at.Str):
		return malformed(descTokenShape)
	}
	tok := Token{AccessToken: at.Str}
	if n, ok := expiresIn(gjson.GetBytes(body, "expires_in")); ok {
		tok.ExpiresIn, tok.HasExpiry = n, true
	} else if n, ok := jwtExpiresIn(at.Str, nowMs); ok {
		tok.ExpiresIn, tok.HasExpiry = n, true
	}
	return tok, nil
}

// expiresIn accepts a positive JSON number (fractions truncated) or a string of decimal digits,
// which some IdPs and gateways send. Zero, negative, fractional below one and garbage all count
// as absent, so that the JWT "exp" gets its chance.
func expiresIn(r gjson.Result) (int64, bool) {
	switch r.Type {
	case gjson.Number:
		if !(r.Num >= 1) { // also false for NaN
			return 0, false
		}
		return int64(math.Min(r.Num, MaxExpiresIn)), true
	case gjson.String:
		s := r.Str
		if s == "" || len(s) > 20 {
			return 0, false
		}
		var n int64
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			if n < MaxExpiresIn {
				n = n*10 + int64(c-'0')
			}
		}
		if n <= 0 {
			return 0, false
		}
		return min(n, MaxExpiresIn), true
	default:
		return 0, false
	}
}

// jwtExpiresIn reads the unverified "exp" of a JWS compact token. Not verifying is fine: the
// token came from the IdP over the callout, and the value only bounds how long we cache it. The
// result may be zero or negative (an already expired token); the caller decides what that means.
func jwtExpiresIn(tok string, nowMs int64) (int64, bool) {
	header, rest, ok := strings.Cut(tok, ".")
	if !ok {
		return 0, false
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.IndexByte(sig, '.') >= 0 || !isB64URL(header) || !isB64URL(payload) || !isB64URL(sig) {
		return 0, false
	}
	payload = strings.TrimRight(payload, "=")
	if header == "" || payload == "" {
		return 0, false
	}
	claims, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil || !isJSONObject(claims) {
		return 0, false
	}
	exp := gjson.GetBytes(claims, "exp")
	if exp.Type != gjson.Number || math.IsNaN(exp.Num) {
		return 0, false
	}
	// Clamp before converting: a float outside int64 has no defined conversion.
	const lim = 1 << 53
	e := int64(math.Max(-lim, math.Min(exp.Num, lim)))
	d := e - nowMs/1000
	return max(-MaxExpiresIn, min(d, MaxExpiresIn)), true
}

// isB64URL accepts the base64url alphabet with optional trailing '=' padding.
func isB64URL(s string) bool {
	s = strings.TrimRight(s, "=")
	for i := 0; i < len(s); i++ {
		if charClass[s[i]]&cB64URL == 0 {
			return false
		}
	}
	return true
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if !isJSONSpace(c) {
			return false
		}
	}
	return true
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// isJSONObject reports whether b is one valid JSON object (surrounding white space allowed)
// nested at most maxJSONDepth deep.
func isJSONObject(b []byte) bool {
	i := 0
	for i < len(b) && isJSONSpace(b[i]) {
		i++
	}
	if i == len(b) || b[i] != '{' {
		return false
	}
	depth, inString := 0, false
	for ; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			if depth++; depth > maxJSONDepth {
				return false
			}
		case '}', ']':
			depth--
		}
	}
	return gjson.ValidBytes(b)
}

// containsFold is an allocation-free ASCII case-insensitive strings.Contains; needle must be
// lower-case.
func containsFold(s, needle string) bool {
	for i := 0; i+len(needle) <= len(s); i++ {
		j := 0
		for j < len(needle) && lowerASCII(s[i+j]) == needle[j] {
			j++
		}
		if j == len(needle) {
			return true
		}
	}
	return false
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
