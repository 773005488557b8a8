package idp

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
)

// Paths under the realm, as Keycloak lays them out.
const (
	TokenPath     = "/protocol/openid-connect/token"
	CertsPath     = "/protocol/openid-connect/certs"
	DiscoveryPath = "/.well-known/openid-configuration"
)

// IdP is a running OIDC provider for one realm. All its methods are safe for concurrent use.
type IdP struct {
	cfg    Config
	key    *rsa.PrivateKey
	kid    string
	addr   string // 127.0.0.1:port, kept across Stop/Restart
	issuer string

	storage   *storage
	provider  *op.Provider
	opHandler http.Handler

	mu       sync.RWMutex // realm state below
	users    map[string]User
	subjects map[string]string // sub -> username
	clients  map[string]Client
	lifetime time.Duration
	hook     func(grant string, body map[string]any)

	exchangeDisabled   atomic.Bool
	exchangeFeatureOff atomic.Bool
	faults             faults
	stats              stats
	sessions           sessions

	srvMu   sync.Mutex
	srv     *http.Server
	stop    chan struct{}
	served  chan struct{} // closed when Serve has returned (the listener is closed)
	running bool
	closed  bool
}

// Start starts an IdP for cfg (see DefaultConfig) and returns once it accepts connections.
func Start(cfg Config) (*IdP, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	key := cfg.SigningKey
	if key == nil {
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, err
		}
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("idp: listen: %w", err)
	}
	p := &IdP{
		cfg:      cfg,
		key:      key,
		kid:      base64.RawURLEncoding.EncodeToString(sum[:16]),
		addr:     ln.Addr().String(),
		users:    map[string]User{},
		subjects: map[string]string{},
		clients:  map[string]Client{},
		lifetime: cfg.AccessTokenLifetime,
	}
	p.issuer = "http://" + p.addr + "/realms/" + cfg.Realm
	for _, u := range cfg.Users {
		p.users[u.Username] = u
		p.subjects[u.Subject] = u.Username
	}
	for _, c := range cfg.Clients {
		p.clients[c.ID] = c
	}
	p.storage = &storage{p: p}

	var cryptoKey [32]byte
	_, _ = rand.Read(cryptoKey[:])
	p.provider, err = op.NewProvider(&op.Config{
		CryptoKey:       cryptoKey,
		AuthMethodPost:  true,
		SupportedScopes: cfg.Scopes,
	}, p.storage, op.StaticIssuer(p.issuer), op.WithAllowInsecure())
	if err != nil {
		ln.Close()
		return nil, err
	}
	endpoints := op.Endpoints{
		Authorization: op.NewEndpoint("protocol/openid-connect/auth"), // advertised, not served
		Token:         op.NewEndpoint(strings.TrimPrefix(TokenPath, "/")),
		JwksURI:       op.NewEndpoint(strings.TrimPrefix(CertsPath, "/")),
	}
	server := &kcServer{LegacyServer: op.NewLegacyServer(p.provider, endpoints), p: p}
	p.opHandler = op.RegisterLegacyServer(server, http.NotFound)

	p.srvMu.Lock()
	p.serveLocked(ln)
	p.srvMu.Unlock()
	return p, nil
}

func (p *IdP) serveLocked(ln net.Listener) {
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	p.srv = srv
	p.stop = make(chan struct{})
	served := make(chan struct{})
	p.served = served
	p.running = true
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
}

// URL is the base URL, http://127.0.0.1:<port> (Keycloak's {base}).
func (p *IdP) URL() string { return "http://" + p.addr }

// Addr is 127.0.0.1:<port>.
func (p *IdP) Addr() string { return p.addr }

// Port is the TCP port.
func (p *IdP) Port() int {
	_, port, _ := net.SplitHostPort(p.addr)
	n, _ := strconv.Atoi(port)
	return n
}

// Realm is the realm name.
func (p *IdP) Realm() string { return p.cfg.Realm }

// Issuer is http://127.0.0.1:<port>/realms/<realm>.
func (p *IdP) Issuer() string { return p.issuer }

// TokenEndpoint is {Issuer}/protocol/openid-connect/token.
func (p *IdP) TokenEndpoint() string { return p.issuer + TokenPath }

// JWKSURL is {Issuer}/protocol/openid-connect/certs.
func (p *IdP) JWKSURL() string { return p.issuer + CertsPath }

// DiscoveryURL is {Issuer}/.well-known/openid-configuration.
func (p *IdP) DiscoveryURL() string { return p.issuer + DiscoveryPath }

// KeyID is the kid of the signing key.
func (p *IdP) KeyID() string { return p.kid }

// PublicKey is the public signing key.
func (p *IdP) PublicKey() *rsa.PublicKey { return &p.key.PublicKey }

// Stop takes the IdP down: the listener and every connection are closed (held requests are
// dropped), so new connections are refused. Counters, faults, users, clients and the signing key
// are kept; Restart brings the IdP back on the same port. Stop on a stopped IdP does nothing.
func (p *IdP) Stop() error {
	p.srvMu.Lock()
	defer p.srvMu.Unlock()
	if !p.running {
		return nil
	}
	p.running = false
	close(p.stop)
	err := p.srv.Close()
	// The listening socket is really closed once Serve's pending Accept has returned; until then
	// new connections would be queued and then reset instead of refused.
	<-p.served
	return err
}

// Restart listens again on the same address after Stop (it does nothing on a running IdP).
func (p *IdP) Restart() error {
	p.srvMu.Lock()
	defer p.srvMu.Unlock()
	if p.closed {
		return errors.New("idp: closed")
	}
	if p.running {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("idp: listen again on %s: %w", p.addr, err)
	}
	p.serveLocked(ln)
	return nil
}

// Running reports whether the IdP is listening (started and not stopped).
func (p *IdP) Running() bool {
	p.srvMu.Lock()
	defer p.srvMu.Unlock()
	return p.running
}

// Close stops the IdP for good.
func (p *IdP) Close() error {
	err := p.Stop()
	p.srvMu.Lock()
	p.closed = true
	p.srvMu.Unlock()
	return err
}

// ---- realm state ----

func (p *IdP) user(username string) (User, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	u, ok := p.users[username]
	return u, ok
}

func (p *IdP) userBySubject(sub string) (User, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	name, ok := p.subjects[sub]
	if !ok {
		return User{}, false
	}
	return p.users[name], true
}

func (p *IdP) client(id string) (Client, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c, ok := p.clients[id]
	return c, ok
}

func (p *IdP) validScopes(scopes []string) bool {
	for _, s := range scopes {
		if !slices.Contains(p.cfg.Scopes, s) {
			return false
		}
	}
	return true
}

// Subject is the "sub" of the user's tokens ("" for an unknown user).
func (p *IdP) Subject(username string) string {
	u, _ := p.user(username)
	return u.Subject
}

// User returns a user of the realm.
func (p *IdP) User(username string) (User, bool) { return p.user(username) }

// Client returns a client of the realm.
func (p *IdP) Client(id string) (Client, bool) {
	c, ok := p.client(id)
	c.Audiences = slices.Clone(c.Audiences)
	return c, ok
}

// AddUser adds a user, or replaces the user of the same username.
func (p *IdP) AddUser(u User) error {
	u, err := u.normalize()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.users[u.Username]; ok {
		delete(p.subjects, old.Subject)
	}
	p.users[u.Username] = u
	p.subjects[u.Subject] = u.Username
	return nil
}

// SetClient adds a client, or replaces the client of the same ID (e.g. to rotate its secret,
// disable it, or switch its standard token exchange off).
func (p *IdP) SetClient(c Client) error {
	if err := c.validate(); err != nil {
		return err
	}
	c.Audiences = slices.Clone(c.Audiences)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clients[c.ID] = c
	return nil
}

// SetTokenExchangeEnabled false makes every token exchange answer 400 invalid_request "Standard
// token exchange is not enabled for the requested client" (after client authentication), as
// Keycloak does when the client's "Standard token exchange" switch is off. true restores the
// clients' own switches.
func (p *IdP) SetTokenExchangeEnabled(enabled bool) { p.exchangeDisabled.Store(!enabled) }

// TokenExchangeEnabled reports the SetTokenExchangeEnabled switch.
func (p *IdP) TokenExchangeEnabled() bool { return !p.exchangeDisabled.Load() }

// SetTokenExchangeFeature false makes the token-exchange grant answer 400 unsupported_grant_type
// "Unsupported grant_type" (before client authentication), as Keycloak does when every token
// exchange feature is disabled server-wide.
func (p *IdP) SetTokenExchangeFeature(enabled bool) { p.exchangeFeatureOff.Store(!enabled) }

// SetAccessTokenLifetime changes the lifetime (and expires_in) of tokens issued from now on.
func (p *IdP) SetAccessTokenLifetime(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lifetime = d
}

// AccessTokenLifetime is the lifetime of tokens issued now.
func (p *IdP) AccessTokenLifetime() time.Duration {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.lifetime
}

// SetResponseHook sets a function that may change every success answer of the token endpoint
// before it is sent (grant is the grant_type; body has access_token, expires_in, ...). E.g.
// delete(body, "expires_in"). nil removes the hook.
func (p *IdP) SetResponseHook(hook func(grant string, body map[string]any)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hook = hook
}

func (p *IdP) responseHook() func(string, map[string]any) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.hook
}

// authenticateClient is Keycloak's ClientIdAndSecretAuthenticator.
func (p *IdP) authenticateClient(id, secret string, secretSent bool) (Client, *oauthError) {
	c, ok := p.client(id)
	if !ok || c.Disabled {
		return Client{}, &oauthError{http.StatusUnauthorized, ErrInvalidClient, DescInvalidClient}
	}
	if !c.Confidential {
		return c, nil
	}
	if !secretSent || secret != c.Secret {
		return Client{}, &oauthError{http.StatusUnauthorized, ErrUnauthorizedClient, DescInvalidClient}
	}
	return c, nil
}

// ---- HTTP ----

// ServeHTTP serves Keycloak's layout: discovery and JWKS go to op; the token endpoint goes through
// the counters, faults and Keycloak's checks, then to op (or to the password grant).
func (p *IdP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	prefix := "/realms/" + p.cfg.Realm
	rest, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok || (rest != "" && rest[0] != '/') {
		if strings.HasPrefix(r.URL.Path, "/realms/") {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "Realm does not exist"})
			return
		}
		writeNotFound(w)
		return
	}
	switch rest {
	case TokenPath:
		p.serveToken(w, r)
	case LogoutPath:
		p.serveLogout(w, r)
	case DiscoveryPath, CertsPath:
		r2 := r.Clone(r.Context())
		r2.URL.Path = rest
		r2.URL.RawPath = ""
		p.opHandler.ServeHTTP(w, r2)
	default:
		writeNotFound(w)
	}
}

func writeNotFound(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotFound, errorBody{
		Error:       "Unable to find matching target resource method",
		Description: "For more on this error consult the server log.",
	})
}

const maxFormBytes = 1 << 20

func (p *IdP) serveToken(w http.ResponseWriter, r *http.Request) {
	p.srvMu.Lock()
	stop := p.stop
	p.srvMu.Unlock()

	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "HTTP 405 Method Not Allowed"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBytes))
	if err != nil {
		writeError(w, http.StatusBadRequest, ErrInvalidRequest, "request body: "+err.Error())
		return
	}
	form, formErr := url.ParseQuery(string(body))
	grant := form.Get("grant_type")
	clientID, secret, secretSent, auth, basicErr := clientCredentials(r, form)

	rec := Request{
		Time:       time.Now(),
		Grant:      grant,
		ClientID:   clientID,
		ClientAuth: auth,
		Header:     r.Header.Clone(),
		Form:       form,
	}
	if grant == GrantTokenExchange {
		rec.SubjectToken = form.Get("subject_token")
		if claims, err := DecodeClaims(rec.SubjectToken); err == nil {
			rec.Subject, _ = claims["sub"].(string)
		}
	}
	p.stats.record(rec)

	if f, ok := p.faults.take(grant); ok && p.applyFault(w, r, f, stop) {
		return
	}

	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "HTTP 415 Unsupported Media Type"})
		return
	}
	if formErr != nil {
		writeError(w, http.StatusBadRequest, ErrInvalidRequest, "Invalid form: "+formErr.Error())
		return
	}
	// Keycloak's TokenEndpoint.checkParameterDuplicated: a form parameter given twice is
	// refused, except audience and resource, which may repeat (a second subject_token or
	// client_id must never be picked silently).
	for name, values := range form {
		if len(values) > 1 && name != "audience" && name != "resource" {
			writeError(w, http.StatusBadRequest, ErrInvalidRequest, DescDuplicatedParameter)
			return
		}
	}
	switch {
	case grant == "":
		writeError(w, http.StatusBadRequest, ErrInvalidRequest, DescMissingGrantType)
		return
	case grant == GrantTokenExchange && p.exchangeFeatureOff.Load(),
		grant != GrantTokenExchange && grant != GrantClientCredentials && grant != GrantPassword:
		writeError(w, http.StatusBadRequest, ErrUnsupportedGrantType, DescUnsupportedGrantType)
		return
	}
	if basicErr {
		// An Authorization header that is not Basic, and no client_id: Keycloak's Basic challenge.
		w.Header().Set("WWW-Authenticate", `Basic realm="`+p.cfg.Realm+`"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if clientID == "" {
		writeError(w, http.StatusBadRequest, ErrInvalidClient, DescMissingClientID)
		return
	}

	if grant == GrantPassword {
		c, oerr := p.authenticateClient(clientID, secret, secretSent)
		if oerr != nil {
			oerr.write(w)
			return
		}
		p.passwordGrant(w, r, form, c)
		return
	}

	// Hand the request to op with the client credentials in the form only (Keycloak's precedence:
	// the form overrides the Basic header), so that op sees one authentication method.
	opForm := url.Values{}
	for k, v := range form {
		opForm[k] = slices.Clone(v)
	}
	opForm.Set("client_id", clientID)
	opForm.Del("client_secret")
	if secretSent {
		opForm.Set("client_secret", secret)
	}
	encoded := opForm.Encode()
	r2 := r.Clone(r.Context())
	r2.URL.Path = TokenPath
	r2.URL.RawPath = ""
	r2.Header.Del("Authorization")
	r2.Body = io.NopCloser(bytes.NewReader([]byte(encoded)))
	r2.ContentLength = int64(len(encoded))
	r2.PostForm = opForm
	r2.Form = opForm
	p.opHandler.ServeHTTP(w, r2)
}

// clientCredentials extracts the client authentication like Keycloak: HTTP Basic (RFC 6749
// form-encoded id and secret), overridden by the form's client_id and client_secret. basicErr
// reports an Authorization header that is not Basic with no client_id in the form.
func clientCredentials(r *http.Request, form url.Values) (id, secret string, secretSent bool, auth string, basicErr bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		if u, pw, ok := parseBasic(h); ok {
			id, secret, secretSent, auth = u, pw, true, "basic"
		} else if _, ok := form["client_id"]; !ok {
			basicErr = true
		}
	}
	if v, ok := form["client_id"]; ok && len(v) > 0 {
		id = v[0]
	}
	if v, ok := form["client_secret"]; ok && len(v) > 0 {
		secret, secretSent, auth = v[0], true, "post"
	}
	return id, secret, secretSent, auth, basicErr
}

func parseBasic(h string) (user, pass string, ok bool) {
	scheme, cred, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", "", false
	}
	u, pw, found := strings.Cut(string(raw), ":")
	if !found {
		return "", "", false
	}
	if dec, err := url.QueryUnescape(u); err == nil {
		u = dec
	}
	if dec, err := url.QueryUnescape(pw); err == nil {
		pw = dec
	}
	return u, pw, true
}
