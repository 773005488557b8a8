package config

import (
	"strconv"
	"strings"
)

// parseEndpoint splits tokenEndpoint by hand rather than with net/url: net/url accepts (and
// silently re-escapes) far more than is safe to copy into :authority and :path, and the
// callout needs exactly what the operator wrote. It returns a problem text, or "".
//
// URLs containing '@' are never echoed: that is where "user:password@" would be.
func parseEndpoint(raw string) (Endpoint, string) {
	echo := ""
	if strings.IndexByte(raw, '@') < 0 {
		echo = ", got " + quote(raw)
	}
	notAbsolute := "must be an absolute http(s) URL" + echo
	switch {
	case raw == "":
		return Endpoint{}, "must not be empty"
	case len(raw) > MaxURLBytes:
		return Endpoint{}, "must be at most " + strconv.Itoa(MaxURLBytes) + " bytes, got " + strconv.Itoa(len(raw))
	}

	i := strings.Index(raw, "://")
	if i <= 0 {
		return Endpoint{}, notAbsolute
	}
	scheme := strings.ToLower(raw[:i])
	var defaultPort uint16
	switch scheme {
	case "https":
		defaultPort = 443
	case "http":
		defaultPort = 80
	default:
		return Endpoint{}, notAbsolute
	}
	for j := 0; j < len(raw); j++ {
		if !isURLChar(raw[j]) {
			return Endpoint{}, "must contain only URL characters (RFC 3986; percent-encode anything else)" + echo
		}
	}
	if strings.IndexByte(raw, '#') >= 0 {
		return Endpoint{}, "must not contain a fragment (\"#...\")" + echo
	}

	rest := raw[i+3:]
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	authority, pathQuery := rest[:end], rest[end:]
	if strings.IndexByte(authority, '@') >= 0 {
		return Endpoint{}, "must not contain user information (\"user:password@\"); " +
			"the client credentials belong in clientId and clientSecret"
	}

	var host, hostAsWritten, port string
	hasPort := false
	if strings.HasPrefix(authority, "[") {
		j := strings.IndexByte(authority, ']')
		if j < 0 {
			return Endpoint{}, "must have a valid host" + echo
		}
		host, hostAsWritten = authority[1:j], authority[:j+1]
		if !isIPv6Literal(host) {
			return Endpoint{}, "must have a valid host" + echo
		}
		after := authority[j+1:]
		if after != "" {
			if after[0] != ':' {
				return Endpoint{}, "must have a valid host" + echo
			}
			port, hasPort = after[1:], true
		}
	} else {
		host = authority
		if j := strings.IndexByte(authority, ':'); j >= 0 {
			host, port, hasPort = authority[:j], authority[j+1:], true
		}
		hostAsWritten = host
		if host == "" {
			return Endpoint{}, "must include a host" + echo
		}
		if !isRegName(host) {
			return Endpoint{}, "must have a valid host" + echo
		}
	}

	p := defaultPort
	if hasPort {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || port[0] == '+' {
			return Endpoint{}, "must have a port between 1 and 65535" + echo
		}
		p = uint16(n)
	}

	if strings.ContainsAny(pathQuery, "[]") {
		return Endpoint{}, "must contain only URL characters (RFC 3986; percent-encode anything else)" + echo
	}
	if !validPercentEncoding(pathQuery) {
		return Endpoint{}, "must not contain malformed percent-encoding" + echo
	}
	path := pathQuery
	switch {
	case path == "":
		path = "/"
	case path[0] == '?':
		path = "/" + path
	}

	ep := Endpoint{
		URL:       raw,
		Scheme:    scheme,
		Authority: strings.ToLower(hostAsWritten),
		Host:      strings.ToLower(host),
		Port:      p,
		Path:      path,
	}
	if hasPort {
		ep.Authority += ":" + port
	}
	return ep, ""
}

// isURLChar: RFC 3986 unreserved, reserved and '%'.
func isURLChar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("-._~:/?#[]@!$&'()*+,;=%", b) >= 0
}

// isRegName accepts DNS names (and IPv4 addresses); the rarer reg-name characters that
// RFC 3986 allows are refused because no IdP host uses them and they would be passed
// verbatim into the cluster name.
func isRegName(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '-', b == '.', b == '_':
		default:
			return false
		}
	}
	return s != ""
}

// isIPv6Literal is a character check only (no zone identifiers); Envoy resolves the
// cluster, the filter only copies the text into :authority.
func isIPv6Literal(s string) bool {
	if strings.IndexByte(s, ':') < 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case '0' <= b && b <= '9', 'a' <= b && b <= 'f', 'A' <= b && b <= 'F', b == ':', b == '.':
		default:
			return false
		}
	}
	return true
}

func validPercentEncoding(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

func isHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
}
