package oauth

// minRedactRun is the shortest run of token characters that is redacted. Real OAuth error codes
// and the words of real descriptions are shorter; every JWT and opaque token of any strength is
// longer.
const minRedactRun = 24

const redacted = "[redacted]"

// sanitizeCode makes an OAuth "error" value safe and comparable: ASCII letters lower-cased,
// [a-z0-9_.-] kept, every other byte replaced by '_'. The allowed set is all token characters,
// so a result of minRedactRun or more bytes could be an echoed token and is replaced by
// "redacted" as a whole; no code a Keycloak token endpoint sends is that long.
func sanitizeCode(raw string) string {
	if raw == "" {
		return ""
	}
	if len(raw) >= minRedactRun {
		return "redacted"
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i++ {
		c := lowerASCII(raw[i])
		if c != '_' && c != '.' && c != '-' && !('a' <= c && c <= 'z') && !('0' <= c && c <= '9') {
			c = '_'
		}
		b[i] = c
	}
	return string(b)
}

// sanitizeText makes IdP text fit for a log line: control bytes become a space, runs of spaces
// collapse, a non-ASCII character becomes one '?', leading and trailing spaces go, any run of
// minRedactRun or more token characters becomes "[redacted]", and the result is cut at
// MaxDescriptionBytes (never inside "[redacted]"). Runs are measured on the input with stray
// UTF-8 continuation bytes skipped, so dropping bytes can never leave a long run unredacted.
func sanitizeText(s string) string {
	out := make([]byte, 0, min(len(s), MaxDescriptionBytes))
	space := false // a space is pending; written only if something follows
	for i := 0; i < len(s) && len(out) < MaxDescriptionBytes; {
		c := s[i]
		if isTokenChar(c) {
			j, n := i, 0
			for j < len(s) {
				if isTokenChar(s[j]) {
					n++
				} else if !isContinuation(s[j]) {
					break
				}
				j++
			}
			if space && len(out) > 0 {
				out = append(out, ' ')
			}
			space = false
			if n >= minRedactRun {
				if len(out)+len(redacted) > MaxDescriptionBytes {
					break
				}
				out = append(out, redacted...)
			} else {
				for k := i; k < j && len(out) < MaxDescriptionBytes; k++ {
					if isTokenChar(s[k]) {
						out = append(out, s[k])
					}
				}
			}
			i = j
			continue
		}
		i++
		switch {
		case c <= ' ' || c == 0x7f:
			space = true
		case isContinuation(c):
			// the '?' was written for the lead byte
		default:
			if c >= 0x80 {
				c = '?'
			}
			if space && len(out) > 0 {
				out = append(out, ' ')
			}
			space = false
			out = append(out, c)
		}
	}
	if len(out) > MaxDescriptionBytes {
		out = out[:MaxDescriptionBytes]
	}
	for len(out) > 0 && out[len(out)-1] == ' ' {
		out = out[:len(out)-1]
	}
	return string(out)
}

func isContinuation(c byte) bool { return c&0xC0 == 0x80 }
