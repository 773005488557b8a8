package oauth

import (
	"encoding/base64"
	"strings"

	"github.com/tidwall/gjson"
)

// maxPayloadBytes bounds the decoded JWT payload (the whole token is at most MaxTokenBytes).
const maxPayloadBytes = 12 << 10

// UserClaims is what the filter reads from a user token before any callout, without verifying
// it: it is only ever used to refuse or shorten (a token past its exp, with another issuer, or
// not a JWT at all is not sent to the IdP; a cached exchange is not used past the exp), never
// to trust anything.
type UserClaims struct {
	JWT    bool   // three base64url parts, the middle one a JSON object
	Exp    int64  // exp in seconds since the epoch, if HasExp
	HasExp bool   // a numeric exp in range
	Issuer string // iss, if a string (attacker-controlled: compare it, never log it)
}

// ReadUserClaims parses token as a JWS compact serialisation (header.payload.signature, none
// empty). Anything else (an opaque token, a JWE's five parts, garbage) has JWT false.
func ReadUserClaims(token string) UserClaims {
	first := strings.IndexByte(token, '.')
	if first <= 0 {
		return UserClaims{}
	}
	rest := token[first+1:]
	second := strings.IndexByte(rest, '.')
	if second <= 0 || second+1 == len(rest) || strings.IndexByte(rest[second+1:], '.') >= 0 {
		return UserClaims{}
	}
	payload := strings.TrimRight(rest[:second], "=")
	n := base64.RawURLEncoding.DecodedLen(len(payload))
	if n > maxPayloadBytes {
		return UserClaims{}
	}
	var stack [2048]byte
	buf := stack[:0]
	if n > len(stack) {
		buf = make([]byte, 0, n)
	}
	buf, err := base64.RawURLEncoding.AppendDecode(buf, []byte(payload))
	if err != nil || len(buf) == 0 || buf[0] != '{' || !gjson.ValidBytes(buf) {
		return UserClaims{}
	}
	c := UserClaims{JWT: true}
	fields := gjson.GetManyBytes(buf, "exp", "iss")
	if exp := fields[0]; exp.Type == gjson.Number && exp.Num >= 0 && exp.Num <= 1e11 {
		c.Exp, c.HasExp = int64(exp.Num), true
	}
	if iss := fields[1]; iss.Type == gjson.String {
		c.Issuer = iss.Str
	}
	return c
}
