package oauth

import (
	"encoding/base64"
	"strings"
)

// minRedactNeedle is the shortest secret form that is redacted: shorter ones would blank out
// ordinary words (a secret that short is no secret; validate-config users see the advice).
const minRedactNeedle = 4

// Redactor removes a client's secret from text an IdP or a proxy in front of it sends back:
// Keycloak's own messages never echo it, but a misconfigured proxy, a debug page or a custom
// authenticator can ("invalid client_secret=…", an echoed Authorization header). The secret is
// matched exactly in every form the filter sends it: raw, form-encoded (the form body), and
// inside HTTP Basic credentials (base64 of id:secret, form-encoded per RFC 6749 §2.3.1, and plain
// RFC 7617), plus base64 of the secret alone. The long-run rule of sanitizeText already redacts
// tokens and long secrets; this catches short ones and those cut into pieces by punctuation.
type Redactor struct{ needles []string }

// NewRedactor prepares the forms of c's secret.
func NewRedactor(c Client) *Redactor {
	r := &Redactor{}
	if c.Secret == "" {
		return r
	}
	esc := func(s string) string { return string(appendEscaped(nil, s)) }
	b64 := base64.StdEncoding.EncodeToString
	for _, n := range []string{
		c.Secret,
		esc(c.Secret),
		b64([]byte(esc(c.ID) + ":" + esc(c.Secret))),
		b64([]byte(c.ID + ":" + c.Secret)),
		b64([]byte(c.Secret)),
		strings.TrimRight(b64([]byte(c.Secret)), "="),
	} {
		r.add(n)
	}
	return r
}

func (r *Redactor) add(n string) {
	if len(n) < minRedactNeedle {
		return
	}
	for _, have := range r.needles {
		if have == n {
			return
		}
	}
	r.needles = append(r.needles, n)
	// Longest first, so that a form containing another is replaced whole.
	for i := len(r.needles) - 1; i > 0 && len(r.needles[i]) > len(r.needles[i-1]); i-- {
		r.needles[i], r.needles[i-1] = r.needles[i-1], r.needles[i]
	}
}

// apply replaces every needle, and extra (e.g. the user token being exchanged), in s.
func (r *Redactor) apply(s, extra string) string {
	if r != nil {
		for _, n := range r.needles {
			if strings.Contains(s, n) {
				s = strings.ReplaceAll(s, n, redacted)
			}
		}
	}
	if len(extra) >= minRedactNeedle && strings.Contains(s, extra) {
		s = strings.ReplaceAll(s, extra, redacted)
	}
	return s
}
