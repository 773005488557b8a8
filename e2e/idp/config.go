package idp

import (
	"crypto/rsa"
	"crypto/sha1"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"
)

// Default client, user and realm names of DefaultConfig.
const (
	DefaultRealm = "demo"

	// FilterClientID is the filter's confidential client: service account on, standard token
	// exchange on, secret FilterClientSecret.
	FilterClientID     = "token-exchange-filter"
	FilterClientSecret = "filter-secret"
	// UIClientID is the user-facing public client (the tokens that arrive in x-user-oidc-token);
	// its audience mapper puts FilterClientID into the aud of its user tokens.
	UIClientID = "kagenti-ui"
	// APIClientID is the target API, the audience the filter requests.
	APIClientID     = "kagenti-api"
	APIClientSecret = "api-secret"

	DefaultAccessTokenLifetime = 300 * time.Second
	DefaultListen              = "127.0.0.1:0"
)

// Users of DefaultConfig (passwords are "<username>-password"; subjects are stable UUIDs derived
// from the username, the same in every IdP).
var (
	Alice = User{Username: "alice", Password: "alice-password", Subject: derivedUUID("user:alice")}
	Bob   = User{Username: "bob", Password: "bob-password", Subject: derivedUUID("user:bob")}
)

// DefaultScopes are the client scopes the realm knows (Keycloak's built-in client scopes). A scope
// parameter naming anything else is answered with 400 invalid_scope.
var DefaultScopes = []string{
	"openid", "profile", "email", "roles", "web-origins", "acr", "basic",
	"address", "phone", "offline_access", "microprofile-jwt", "organization",
}

// tokenDefaultScopes are the default client scopes Keycloak puts in the "scope" claim and answer.
var tokenDefaultScopes = []string{"profile", "email"}

// Config describes the realm the IdP serves.
type Config struct {
	// Realm name; default "demo".
	Realm string
	// Listen is the address to listen on; default "127.0.0.1:0". Only loopback addresses are allowed.
	Listen string
	Users  []User
	// Clients of the realm. Audiences of a client may name clients that do not exist (custom
	// audiences), like Keycloak's audience mapper allows.
	Clients []Client
	// AccessTokenLifetime of every issued token; default 300s. SetAccessTokenLifetime changes it
	// at run time.
	AccessTokenLifetime time.Duration
	// Scopes the realm knows; default DefaultScopes.
	Scopes []string
	// SigningKey to sign tokens with; a new 2048-bit RSA key when nil.
	SigningKey *rsa.PrivateKey
}

// User is a user of the realm.
type User struct {
	Username string
	Password string
	// Subject is the user's id, the "sub" of its tokens; default a UUID derived from the username.
	Subject string
	// Email, when set, is put in the "email" claim.
	Email string
}

// Client is an OIDC client of the realm.
type Client struct {
	ID     string
	Secret string
	// Confidential clients authenticate with Secret (client_secret_post or client_secret_basic);
	// the others are public clients.
	Confidential bool
	// ServiceAccount allows the client_credentials grant ("Service accounts roles").
	ServiceAccount bool
	// StandardTokenExchange is Keycloak's "Standard token exchange" switch of the client.
	StandardTokenExchange bool
	// Audiences are added to the aud of tokens issued to this client (Keycloak's audience mapper).
	// For token exchange they are also the audiences available to the client: a requested
	// audience outside this list gets 400 invalid_request "Requested audience not available".
	// Without audiences a token gets aud = [the client's id].
	Audiences []string
	// DirectAccessGrantsDisabled refuses the password grant for this client
	// (Keycloak's "Direct access grants" switch, on by default).
	DirectAccessGrantsDisabled bool
	// Disabled clients cannot authenticate (401 invalid_client) nor be an audience
	// (400 invalid_client).
	Disabled bool
}

// DefaultConfig is realm "demo" with:
//
//   - client "token-exchange-filter": confidential, secret "filter-secret", service account on,
//     standard token exchange on, audience mapper for "kagenti-api" only, as in the shipped
//     realm: the client is never in its own tokens' aud, so requesting itself is refused;
//   - client "kagenti-ui": public, password grant allowed, audience mapper adding
//     "token-exchange-filter" to its user tokens;
//   - client "kagenti-api": confidential, secret "api-secret", no service account, no exchange;
//   - users alice/"alice-password" and bob/"bob-password".
//
// Each call returns a new value that the caller may change before Start.
func DefaultConfig() Config {
	return Config{
		Realm:  DefaultRealm,
		Listen: DefaultListen,
		Users:  []User{Alice, Bob},
		Clients: []Client{
			{
				ID: FilterClientID, Secret: FilterClientSecret, Confidential: true,
				ServiceAccount: true, StandardTokenExchange: true,
				Audiences: []string{APIClientID}, // as the shipped realm: never the client itself
			},
			{ID: UIClientID, Audiences: []string{FilterClientID}},
			{ID: APIClientID, Secret: APIClientSecret, Confidential: true},
		},
		AccessTokenLifetime: DefaultAccessTokenLifetime,
	}
}

// normalize fills in defaults and validates cfg.
func (cfg Config) normalize() (Config, error) {
	if cfg.Realm == "" {
		cfg.Realm = DefaultRealm
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if err := checkLoopback(cfg.Listen); err != nil {
		return cfg, err
	}
	if cfg.AccessTokenLifetime == 0 {
		cfg.AccessTokenLifetime = DefaultAccessTokenLifetime
	}
	if cfg.AccessTokenLifetime < time.Second {
		return cfg, fmt.Errorf("idp: AccessTokenLifetime %v is below one second", cfg.AccessTokenLifetime)
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = slices.Clone(DefaultScopes)
	}
	users := make([]User, 0, len(cfg.Users))
	seen := map[string]bool{}
	for _, u := range cfg.Users {
		u, err := u.normalize()
		if err != nil {
			return cfg, err
		}
		if seen[u.Username] {
			return cfg, fmt.Errorf("idp: duplicate user %q", u.Username)
		}
		seen[u.Username] = true
		users = append(users, u)
	}
	cfg.Users = users
	clients := make([]Client, 0, len(cfg.Clients))
	seen = map[string]bool{}
	for _, c := range cfg.Clients {
		if err := c.validate(); err != nil {
			return cfg, err
		}
		if seen[c.ID] {
			return cfg, fmt.Errorf("idp: duplicate client %q", c.ID)
		}
		seen[c.ID] = true
		c.Audiences = slices.Clone(c.Audiences)
		clients = append(clients, c)
	}
	cfg.Clients = clients
	return cfg, nil
}

func (u User) normalize() (User, error) {
	if u.Username == "" {
		return u, errors.New("idp: user without username")
	}
	if u.Subject == "" {
		u.Subject = derivedUUID("user:" + u.Username)
	}
	return u, nil
}

func (c Client) validate() error {
	if c.ID == "" {
		return errors.New("idp: client without ID")
	}
	if c.Confidential && c.Secret == "" {
		return fmt.Errorf("idp: confidential client %q without secret", c.ID)
	}
	return nil
}

// checkLoopback refuses listen addresses that are not loopback.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("idp: listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("idp: listen address %q is not a loopback address", addr)
	}
	return nil
}

// derivedUUID is a stable UUID (version 5 layout) derived from name, like Keycloak's user ids.
func derivedUUID(name string) string {
	h := sha1.Sum([]byte("kagenti-e2e-idp:" + name))
	h[6] = (h[6] & 0x0f) | 0x50
	h[8] = (h[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// ServiceAccountSubject is the "sub" of client_credentials tokens of a client: the id of its
// service-account user.
func ServiceAccountSubject(clientID string) string {
	return derivedUUID("service-account:" + clientID)
}

// ServiceAccountUsername is the "preferred_username" of client_credentials tokens of a client.
func ServiceAccountUsername(clientID string) string {
	return "service-account-" + clientID
}
