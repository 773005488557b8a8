package oauth

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
)

// The exact secret never reaches a log line, in any form the filter sends it, however short,
// however the IdP or a proxy in front of it echoes it, and even where the description is cut.
func TestRedactorRemovesTheSecretInEveryForm(t *testing.T) {
	for _, secret := range []string{"s3cr", "p@ss word!", "Sup3r-S3cret-Value-9f2c-and-then-some-more"} {
		c := Client{ID: "gateway", Secret: secret}
		r := NewRedactor(c)
		basic := strings.TrimPrefix(basicAuth(c), "Basic ")
		plainBasic := base64.StdEncoding.EncodeToString([]byte(c.ID + ":" + secret))
		echoes := []string{
			"invalid client_secret=" + secret,
			"body was client_id=gateway&client_secret=" + url.QueryEscape(secret) + "&grant_type=client_credentials",
			"Authorization: Basic " + basic + " rejected",
			"Authorization: Basic " + plainBasic,
			"secret (" + base64.StdEncoding.EncodeToString([]byte(secret)) + ")",
			strings.Repeat("x ", 70) + "secret=" + secret, // at the cut
		}
		for _, echo := range echoes {
			for _, body := range [][]byte{oauthError("invalid_client", echo), []byte("<html>" + echo + "</html>")} {
				_, f := ParseResponseRedacting(401, 3, body, testNowMs, r, "")
				line := f.String()
				for _, form := range []string{secret, url.QueryEscape(secret), basic, plainBasic} {
					if len(form) >= minRedactNeedle && strings.Contains(line, form) {
						t.Errorf("secret %q: %q leaked as %q", secret, line, form)
					}
				}
				if len(secret) >= minRedactNeedle && len(secret) < minRedactRun {
					if !strings.Contains(line, redacted) && !strings.Contains(echo, strings.Repeat("x ", 70)) {
						t.Errorf("secret %q: nothing redacted in %q", secret, line)
					}
				}
			}
		}
		// In the error code too.
		if _, f := ParseResponseRedacting(400, 3, oauthError(secret, "x"), testNowMs, r, ""); len(secret) < minRedactRun && f.Code != "redacted" {
			t.Errorf("secret %q as the error code: %q", secret, f.Code)
		}
	}
}

func TestRedactorRemovesTheUserToken(t *testing.T) {
	const user = "abc.def.ghi" // short and split by dots: the long-run rule would miss it
	_, f := ParseResponseRedacting(400, 3, oauthError("invalid_request", "bad subject_token "+user), testNowMs, NewRedactor(Client{}), user)
	if strings.Contains(f.String(), user) {
		t.Errorf("the user token leaked: %s", f.String())
	}
}
