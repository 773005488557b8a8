package oauth

import "encoding/base64"

// Content types of the callout.
const (
	ContentTypeForm = "application/x-www-form-urlencoded"
	ContentTypeJSON = "application/json"
)

type field struct{ key, value string }

// ExchangeForm is the RFC 8693 token-exchange request body. Fields are written in a fixed order
// (grant_type, subject_token, subject_token_type, audience, scope, client_id, client_secret) so
// that the body is deterministic and tests and traces are readable. scope is omitted when empty,
// and so is audience (an empty audience parameter is an unknown client to Keycloak; the
// configuration defaults it to the client id anyway). The client credentials are in the body
// only when !c.Basic; otherwise they go in the authorization header (RequestHeaders).
func ExchangeForm(subjectToken, audience, scope string, c Client) []byte {
	var buf [7]field
	fs := append(buf[:0],
		field{"grant_type", GrantTypeTokenExchange},
		field{"subject_token", subjectToken},
		field{"subject_token_type", TokenTypeAccessToken},
	)
	if audience != "" {
		fs = append(fs, field{"audience", audience})
	}
	if scope != "" {
		fs = append(fs, field{"scope", scope})
	}
	if !c.Basic {
		fs = append(fs, field{"client_id", c.ID}, field{"client_secret", c.Secret})
	}
	return encodeForm(fs)
}

// ClientCredentialsForm is the body of the service-account token request.
func ClientCredentialsForm(c Client) []byte {
	var buf [3]field
	fs := append(buf[:0], field{"grant_type", GrantTypeClientCredentials})
	if !c.Basic {
		fs = append(fs, field{"client_id", c.ID}, field{"client_secret", c.Secret})
	}
	return encodeForm(fs)
}

// encodeForm writes the fields in order into one exactly sized buffer: this runs on every cache
// miss, and url.Values would add a map, a sort and a few intermediate strings.
func encodeForm(fs []field) []byte {
	n := len(fs) - 1 // separators
	for _, f := range fs {
		n += len(f.key) + 1 + escapedLen(f.value)
	}
	out := make([]byte, 0, n)
	for i, f := range fs {
		if i > 0 {
			out = append(out, '&')
		}
		out = append(out, f.key...) // keys are constants with nothing to escape
		out = append(out, '=')
		out = appendEscaped(out, f.value)
	}
	return out
}

// escapedLen is the length of s once form-encoded.
func escapedLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != ' ' && charClass[c]&cUnreserved == 0 {
			n += 2
		}
	}
	return n
}

// appendEscaped form-encodes s exactly as net/url.QueryEscape does (the WHATWG
// application/x-www-form-urlencoded serialiser): unreserved bytes as is, space as '+', every
// other byte, UTF-8 included, as %XX with upper-case hex.
func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	start := 0 // copy runs of unreserved bytes at once: a JWT is one run
	for i := 0; i < len(s); i++ {
		c := s[i]
		if charClass[c]&cUnreserved != 0 {
			continue
		}
		dst = append(dst, s[start:i]...)
		start = i + 1
		if c == ' ' {
			dst = append(dst, '+')
		} else {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return append(dst, s[start:]...)
}

// RequestHeaders are the headers of a callout to e: the pseudo-headers that Envoy's
// dispatch_http_call requires, the content negotiation, and, for client_secret_basic, the
// authorization header. An empty e.Path is sent as "/" because Envoy refuses a callout without
// :path. Names are lower-case as HTTP/2 and Envoy require.
//
// The Basic credentials are form-encoded before base64 as RFC 6749 §2.3.1 demands (Keycloak
// decodes them so); for ids and secrets made only of unreserved characters this is the same as
// plain RFC 7617 Basic.
func RequestHeaders(e Endpoint, c Client) [][2]string {
	path := e.Path
	if path == "" {
		path = "/"
	}
	h := make([][2]string, 0, 7)
	h = append(h,
		[2]string{":method", "POST"},
		[2]string{":path", path},
		[2]string{":authority", e.Authority},
		[2]string{":scheme", e.Scheme},
		[2]string{"content-type", ContentTypeForm},
		[2]string{"accept", ContentTypeJSON},
	)
	if c.Basic {
		h = append(h, [2]string{"authorization", basicAuth(c)})
	}
	return h
}

func basicAuth(c Client) string {
	const prefix = "Basic "
	raw := make([]byte, 0, escapedLen(c.ID)+1+escapedLen(c.Secret))
	raw = appendEscaped(raw, c.ID)
	raw = append(raw, ':')
	raw = appendEscaped(raw, c.Secret)
	out := make([]byte, 0, len(prefix)+base64.StdEncoding.EncodedLen(len(raw)))
	out = append(out, prefix...)
	return string(base64.StdEncoding.AppendEncode(out, raw))
}
