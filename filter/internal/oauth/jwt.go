package oauth

import (
	"encoding/base64"
	"strings"

	"github.com/tidwall/gjson"
)

// maxPayloadBytes bounds the decoded JWT payload read for its exp (the whole token is at most
// MaxTokenBytes anyway).
const maxPayloadBytes = 12 << 10

// UserTokenExpiry reads the exp claim (seconds since the epoch) of a JWT without verifying it:
// the filter only ever uses it to shorten what it does (a token past its exp is not sent to the
// IdP; a cached exchange is not used past it), never to trust the token. ok is false for a
// token that is not three base64url parts with a JSON object payload carrying a numeric exp in
// range: an opaque token, a JWE, garbage.
func UserTokenExpiry(token string) (expSec int64, ok bool) {
	first := strings.IndexByte(token, '.')
	if first <= 0 {
		return 0, false
	}
	rest := token[first+1:]
	second := strings.IndexByte(rest, '.')
	if second <= 0 || strings.IndexByte(rest[second+1:], '.') >= 0 || second+1 == len(rest) {
		return 0, false
	}
	payload := strings.TrimRight(rest[:second], "=")
	if base64.RawURLEncoding.DecodedLen(len(payload)) > maxPayloadBytes {
		return 0, false
	}
	var stack [2048]byte
	buf := stack[:0]
	if n := base64.RawURLEncoding.DecodedLen(len(payload)); n > len(stack) {
		buf = make([]byte, 0, n)
	}
	buf, err := base64.RawURLEncoding.AppendDecode(buf, []byte(payload))
	if err != nil || len(buf) == 0 || buf[0] != '{' || !gjson.ValidBytes(buf) {
		return 0, false
	}
	exp := gjson.GetBytes(buf, "exp")
	if exp.Type != gjson.Number || exp.Num < 0 || exp.Num > 1e11 {
		return 0, false
	}
	return int64(exp.Num), true
}
