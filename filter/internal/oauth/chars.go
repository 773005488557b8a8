package oauth

// Character classes, looked up per byte on every path that touches a token.
const (
	cUnreserved = 1 << iota // left as is by form encoding: A-Z a-z 0-9 - . _ ~
	cToken                  // token68 without '=': A-Z a-z 0-9 - . _ ~ + /
	cB64URL                 // base64url alphabet: A-Z a-z 0-9 - _
)

var charClass = func() (t [256]uint8) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = cUnreserved | cToken | cB64URL
		t[c+'a'-'A'] = cUnreserved | cToken | cB64URL
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = cUnreserved | cToken | cB64URL
	}
	t['-'] = cUnreserved | cToken | cB64URL
	t['_'] = cUnreserved | cToken | cB64URL
	t['.'] = cUnreserved | cToken
	t['~'] = cUnreserved | cToken
	t['+'] = cToken
	t['/'] = cToken
	return t
}()

// isTokenChar reports whether c may appear in a token, counting '=' (which is only legal as
// trailing padding, but a run of token text in a log line is a leak either way).
func isTokenChar(c byte) bool { return charClass[c]&cToken != 0 || c == '=' }

// ValidUserToken reports whether tok has the shape of a bearer token: 1 to MaxTokenBytes bytes
// of token68 (RFC 7235), which covers JWTs and opaque tokens: A-Z a-z 0-9 - . _ ~ + / with '='
// only as trailing padding, and at least one character before the padding. Anything else in a
// header (spaces, commas, quotes, control bytes) is refused before it can reach a form body,
// a cache key or a log line.
func ValidUserToken(tok string) bool {
	if len(tok) == 0 || len(tok) > MaxTokenBytes {
		return false
	}
	end := len(tok)
	for end > 0 && tok[end-1] == '=' {
		end--
	}
	if end == 0 {
		return false
	}
	for i := 0; i < end; i++ {
		if charClass[tok[i]]&cToken == 0 {
			return false
		}
	}
	return true
}

// BearerToken extracts the credentials of an "authorization: Bearer <token>" value. The scheme
// is case-insensitive (RFC 7235) and followed by one or more spaces; trailing spaces and tabs
// are ignored (Envoy normally trims them already). It returns false for any other scheme, for a
// missing separator ("Bearerabc") and for an empty token. The token is not validated here: call
// ValidUserToken.
func BearerToken(headerValue string) (string, bool) {
	const scheme = "bearer"
	if len(headerValue) <= len(scheme) || headerValue[len(scheme)] != ' ' {
		return "", false
	}
	for i := 0; i < len(scheme); i++ {
		if headerValue[i]|0x20 != scheme[i] {
			return "", false
		}
	}
	tok := headerValue[len(scheme):]
	for len(tok) > 0 && tok[0] == ' ' {
		tok = tok[1:]
	}
	for len(tok) > 0 && (tok[len(tok)-1] == ' ' || tok[len(tok)-1] == '\t') {
		tok = tok[:len(tok)-1]
	}
	if tok == "" {
		return "", false
	}
	return tok, true
}
