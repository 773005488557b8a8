// Package config turns the plugin configuration (JSON) into a validated Config.
//
// Parsing uses gjson (no reflection). Every problem is reported with the JSON path of the
// field it concerns, so that an operator can fix the configuration from one log line.
// Field names follow the original proposal; unknown fields are errors.
package config

// ClientAuth selects how the filter authenticates its confidential client at the token endpoint.
type ClientAuth uint8

const (
	// ClientAuthPost sends client_id and client_secret as form fields (the default).
	ClientAuthPost ClientAuth = iota
	// ClientAuthBasic sends them as an HTTP Basic authorization header.
	ClientAuthBasic
)

// Defaults, also documented in the README's configuration table.
const (
	DefaultTimeoutMs         = 5000
	MaxTimeoutMs             = 60000
	DefaultExpirySkewSeconds = 30
	DefaultOutputHeader      = "authorization"
	DefaultUserTokenHeader   = "x-user-oidc-token"
	DefaultCacheSlots        = 1024
	MinCacheSlots            = 1
	MaxCacheSlots            = 16384 // worst case about 540 MB of shared data; see cache.SharedBytesBound
	// After a failed exchange, requests for the same user token settle at once (fallback, or the
	// strict-mode reply) for this long instead of calling the IdP again; the window doubles with
	// each consecutive failure up to 16 times it (configuration-class failures start 8 times
	// longer). 0 turns the back-off off.
	DefaultFailureBackoffMs = 2000
	MaxFailureBackoffMs     = 600000
	// A cached token with less usable lifetime left than refreshAheadSeconds is still served at
	// once, and a background exchange replaces it (0 turns refresh off). minLifetimeSeconds
	// (top level and per rule; 0 = off) holds a request whose cached token has less than that
	// left for a fresh one instead.
	DefaultRefreshAheadSeconds = 60
	MaxRefreshAheadSeconds     = 3600
	MaxMinLifetimeSeconds      = 3600
)

// Endpoint is the token endpoint split into what an HTTP callout needs.
type Endpoint struct {
	URL       string // as configured
	Scheme    string // "http" or "https"
	Authority string // host[:port] as written in the URL (used for :authority)
	Host      string // host without port
	Port      uint16 // explicit port, else 443 for https and 80 for http
	Path      string // path and query (used for :path); "/" when the URL has none
}

// Exchange holds the tokenExchange block.
type Exchange struct {
	Enabled               bool
	Audience              string // "" = none requested (Keycloak issues every mapped audience)
	Scope                 string // empty = not sent
	UserTokenHeader       string // lower-case; defaults to DefaultUserTokenHeader
	RemoveUserTokenHeader bool   // defaults to true
	// ExpectedIssuer, when set, must equal a user token's iss before it is exchanged (checked
	// locally, unverified, only to refuse: Keycloak's issuer is its frontend URL, which often
	// differs from the address the filter calls, so it cannot be derived from tokenEndpoint).
	ExpectedIssuer string
	// AllowOpaqueTokens lets user tokens that are not JWTs be exchanged (off: a token must be
	// three base64url parts with a JSON object payload).
	AllowOpaqueTokens bool
	// NewKeyRate and NewKeyBurst are the token bucket, shared by the whole Envoy, that exchanges
	// of user tokens with nothing in the cache draw from: NewKeyRate per second, at most
	// NewKeyBurst at once. An empty bucket falls back (strict mode: 503). 0 = no limit.
	NewKeyRate  uint32
	NewKeyBurst uint32
}

// Token-bucket defaults for exchanges of unseen user tokens: far above what a gateway's real
// users start per second, far below what made-up tokens would cost the IdP.
const (
	DefaultNewKeyRate  = 100
	DefaultNewKeyBurst = 1000
	MaxNewKeyRate      = 100_000
)

// Config is a complete, validated plugin configuration. All header names are lower-case.
type Config struct {
	TokenEndpoint            Endpoint
	Cluster                  string // defaults to "outbound|<port>||<host>"
	ClientID                 string
	ClientSecret             string // resolved: from clientSecret or from the clientSecretEnv variable
	ClientSecretEnv          string // the variable's name, if the secret came from the environment
	ClientAuth               ClientAuth
	TimeoutMs                uint32
	ExpirySkewSeconds        int64
	FallbackToServiceAccount bool // defaults to true
	OutputHeader             string
	CacheSlots               uint32
	FailureBackoffMs         int64
	RefreshAheadSeconds      int64
	MinLifetimeSeconds       int64 // a rule's own, when set, wins (Rule.MinLifetimeSeconds)
	TokenExchange            Exchange
	Rules                    []Rule // optional per-route settings; see Match
}
