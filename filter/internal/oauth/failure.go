package oauth

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case SubjectRejected:
		return "subject_rejected"
	case Configuration:
		return "configuration"
	case Malformed:
		return "malformed"
	default:
		return "unknown"
	}
}

// StrictStatus is the status of the local reply in strict mode (BEHAVIOUR.md, scenario 7): 401
// when the IdP said the user's token is no good (400 invalid_request / invalid_grant /
// invalid_token, 403 access_denied), 502 for everything else. It looks at Status and Code only,
// not at Class: a 400 invalid_request is 401 even when it is Keycloak's "Standard token exchange
// is not enabled" (Class Configuration), because that is what the contract says for 400
// invalid_request.
func (f *Failure) StrictStatus() int {
	if f == nil {
		return 502
	}
	switch {
	case f.Status == 400 && (f.Code == "invalid_request" || f.Code == "invalid_grant" || f.Code == "invalid_token"):
		return 401
	case f.Status == 403 && f.Code == "access_denied":
		return 401
	default:
		return 502
	}
}

// String is the failure as one log line, e.g.
// `class=subject_rejected status=400 error=invalid_grant description="Invalid token"`. Empty
// Code and Description are left out. Every part is already sanitised, so it holds no token.
func (f *Failure) String() string {
	if f == nil {
		return "<nil>"
	}
	b := make([]byte, 0, 48+len(f.Code)+len(f.Description))
	b = append(b, "class="...)
	b = append(b, f.Class.String()...)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(f.Status), 10)
	if f.Code != "" {
		b = append(b, " error="...)
		b = append(b, f.Code...)
	}
	if f.Description != "" {
		b = append(b, " description="...)
		b = strconv.AppendQuoteToASCII(b, f.Description)
	}
	return string(b)
}

// Fingerprint names a token in logs without revealing it: the first 8 hex digits of its SHA-256.
// 32 bits tell apart the tokens of one incident; they do not help anyone guess a token.
func Fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:4])
}
