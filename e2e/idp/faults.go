package idp

import (
	"bufio"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Scope selects the token requests a fault applies to.
type Scope int

const (
	// AllGrants: every request to the token endpoint (whatever its grant_type).
	AllGrants Scope = iota
	// TokenExchangeOnly: requests with grant_type urn:ietf:params:oauth:grant-type:token-exchange.
	TokenExchangeOnly
	// ClientCredentialsOnly: requests with grant_type client_credentials.
	ClientCredentialsOnly
	// PasswordOnly: requests with grant_type password.
	PasswordOnly
)

func (s Scope) String() string {
	switch s {
	case AllGrants:
		return "all grants"
	case TokenExchangeOnly:
		return "token exchange"
	case ClientCredentialsOnly:
		return "client credentials"
	case PasswordOnly:
		return "password"
	}
	return "scope(" + strconv.Itoa(int(s)) + ")"
}

// scopeOf is the specific scope of a grant_type (AllGrants when it has none).
func scopeOf(grant string) Scope {
	switch grant {
	case GrantTokenExchange:
		return TokenExchangeOnly
	case GrantClientCredentials:
		return ClientCredentialsOnly
	case GrantPassword:
		return PasswordOnly
	}
	return AllGrants
}

// FaultKind is what a faulty token endpoint does instead of answering normally.
type FaultKind int

const (
	// FaultNone answers normally (after Delay): pure latency.
	FaultNone FaultKind = iota
	// FaultStatus answers Status (default 500) with Body, Content-Type ContentType (default
	// application/json) and Header.
	FaultStatus
	// FaultNonJSON answers 200 with an HTML page (or Body) and Content-Type text/html.
	FaultNonJSON
	// FaultHang never answers: the request is held until the client gives up or the IdP stops.
	FaultHang
	// FaultClose closes the connection without answering (FIN).
	FaultClose
	// FaultReset resets the connection without answering (RST).
	FaultReset
	// FaultResetMidBody sends a 200 status line, headers with the Content-Length of a full token
	// answer and the first third of that body, then closes the connection: the client sees the
	// body end early (unexpected EOF).
	FaultResetMidBody
	// FaultGarbage sends bytes that are not HTTP, then closes the connection.
	FaultGarbage
)

func (k FaultKind) String() string {
	switch k {
	case FaultNone:
		return "none"
	case FaultStatus:
		return "status"
	case FaultNonJSON:
		return "non-json"
	case FaultHang:
		return "hang"
	case FaultClose:
		return "close"
	case FaultReset:
		return "reset"
	case FaultResetMidBody:
		return "reset-mid-body"
	case FaultGarbage:
		return "garbage"
	}
	return "fault(" + strconv.Itoa(int(k)) + ")"
}

// Fault describes a misbehaviour of the token endpoint. The zero value does nothing.
type Fault struct {
	Kind FaultKind
	// Delay is waited before the fault (or the normal answer, for FaultNone). The wait ends early
	// when the client goes away (nothing is answered then) or the IdP stops.
	Delay time.Duration
	// Status, ContentType, Body and Header of FaultStatus (Body also of FaultNonJSON).
	Status      int
	ContentType string
	Body        string
	Header      http.Header
	// Count limits the fault to the next Count matching requests; 0 means until cleared.
	Count int
	// Mix, when not empty, makes the fault a random draw per matching request (see Mix): the
	// fields above other than Count are then ignored.
	Mix []Chance
}

// Chance is one outcome of a Mix: Fault for a share P (0 to 1) of the requests.
type Chance struct {
	P     float64
	Fault Fault
}

// Mix is a fault that draws, for each matching request, one of choices at random: choice i with
// probability choices[i].P (in order; the P should sum to at most 1), else a normal answer. For
// example 10% errors and 5% answers after 2 s, the other 85% answered normally:
//
//	p.SetFault(idp.AllGrants, idp.Mix(
//		idp.Chance{P: 0.10, Fault: idp.Respond(500, "")},
//		idp.Chance{P: 0.05, Fault: idp.Latency(2 * time.Second)}))
//
// A choice's own Count and Mix are ignored. Count (Times) of the mix counts matching requests,
// drawn or not. A request the mix answers normally is not handed to the AllGrants fault (a
// scope's own fault takes precedence, whatever it draws). FaultsApplied counts the requests a
// choice was drawn for. Draws use math/rand/v2.
func Mix(choices ...Chance) Fault {
	return Fault{Mix: append([]Chance(nil), choices...)}
}

// draw picks a choice of a mix, or false for a normal answer.
func (f *Fault) draw() (Fault, bool) {
	x := rand.Float64()
	for _, c := range f.Mix {
		if x < c.P {
			picked := c.Fault
			picked.Count, picked.Mix = 0, nil
			return picked, true
		}
		x -= c.P
	}
	return Fault{}, false
}

// Latency answers normally after d.
func Latency(d time.Duration) Fault { return Fault{Delay: d} }

// Respond answers status with body (Content-Type application/json unless set on the result).
func Respond(status int, body string) Fault {
	return Fault{Kind: FaultStatus, Status: status, Body: body}
}

// RespondError answers status with Keycloak's error shape {"error","error_description"}.
func RespondError(status int, code, description string) Fault {
	return Respond(status, `{"error":`+strconv.Quote(code)+`,"error_description":`+strconv.Quote(description)+`}`)
}

// NonJSON answers 200 with an HTML page.
func NonJSON() Fault { return Fault{Kind: FaultNonJSON} }

// Hang never answers.
func Hang() Fault { return Fault{Kind: FaultHang} }

// CloseConnection closes the connection without answering.
func CloseConnection() Fault { return Fault{Kind: FaultClose} }

// ResetConnection resets the connection without answering.
func ResetConnection() Fault { return Fault{Kind: FaultReset} }

// ResetMidBody sends headers and part of the body, then closes the connection.
func ResetMidBody() Fault { return Fault{Kind: FaultResetMidBody} }

// Garbage sends non-HTTP bytes, then closes the connection.
func Garbage() Fault { return Fault{Kind: FaultGarbage} }

// Times returns f limited to the next n matching requests.
func (f Fault) Times(n int) Fault { f.Count = n; return f }

// After returns f with a delay d before it.
func (f Fault) After(d time.Duration) Fault { f.Delay = d; return f }

// faults holds the active fault of each scope.
type faults struct {
	mu     sync.Mutex
	active map[Scope]*Fault
	hits   int
}

// take returns the fault that applies to a request of grant (the grant's own scope first, then
// AllGrants) and counts it down.
func (fs *faults) take(grant string) (Fault, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, s := range []Scope{scopeOf(grant), AllGrants} {
		f, ok := fs.active[s]
		if !ok {
			continue
		}
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				delete(fs.active, s)
			}
		}
		if len(f.Mix) > 0 {
			picked, ok := f.draw()
			if ok {
				fs.hits++
			}
			return picked, ok
		}
		fs.hits++
		return *f, true
	}
	return Fault{}, false
}

// SetFault makes the token endpoint misbehave for requests in scope, replacing the fault of that
// scope. A scope's own fault takes precedence over the AllGrants fault. Requests are counted and
// recorded before the fault applies.
func (p *IdP) SetFault(scope Scope, f Fault) {
	p.faults.mu.Lock()
	defer p.faults.mu.Unlock()
	if p.faults.active == nil {
		p.faults.active = map[Scope]*Fault{}
	}
	if f.Count < 0 {
		f.Count = 0
	}
	p.faults.active[scope] = &f
}

// SetLatency adds latency d to every request in scope (d <= 0 clears the scope's fault).
func (p *IdP) SetLatency(scope Scope, d time.Duration) {
	if d <= 0 {
		p.ClearFault(scope)
		return
	}
	p.SetFault(scope, Latency(d))
}

// ClearFault removes the fault of scope.
func (p *IdP) ClearFault(scope Scope) {
	p.faults.mu.Lock()
	defer p.faults.mu.Unlock()
	delete(p.faults.active, scope)
}

// ClearFaults removes every fault.
func (p *IdP) ClearFaults() {
	p.faults.mu.Lock()
	defer p.faults.mu.Unlock()
	p.faults.active = nil
}

// FaultsApplied is the number of requests a fault has applied to so far.
func (p *IdP) FaultsApplied() int {
	p.faults.mu.Lock()
	defer p.faults.mu.Unlock()
	return p.faults.hits
}

const nonJSONPage = "<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head>" +
	"<body><h1>Service Unavailable</h1><p>The server is temporarily unable to service your request.</p></body></html>\n"

// fullAnswer is the body a FaultResetMidBody announces; only its first part is sent.
const fullAnswer = `{"access_token":"eyJhbGciOiJSUzI1NiIsInR5cCIgOiAiSldUIiwia2lkIiA6ICJ0cnVuY2F0ZWQifQ.` +
	`eyJzdWIiOiJ0cnVuY2F0ZWQifQ.c2lnbmF0dXJl","expires_in":300,"refresh_expires_in":0,` +
	`"token_type":"Bearer","not-before-policy":0,"scope":"profile email"}`

// applyFault runs f. It reports whether the request has been dealt with (answered, dropped, or
// abandoned because the client left); false means: answer normally.
func (p *IdP) applyFault(w http.ResponseWriter, r *http.Request, f Fault, stop <-chan struct{}) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return true
		case <-stop:
			dropConnection(w, true)
			return true
		}
	}
	switch f.Kind {
	case FaultNone:
		return false
	case FaultStatus:
		status := f.Status
		if status == 0 {
			status = http.StatusInternalServerError
		}
		for k, vs := range f.Header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		ct := f.ContentType
		if ct == "" {
			ct = "application/json"
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Length", strconv.Itoa(len(f.Body)))
		w.WriteHeader(status)
		_, _ = w.Write([]byte(f.Body))
	case FaultNonJSON:
		body := f.Body
		if body == "" {
			body = nonJSONPage
		}
		w.Header().Set("Content-Type", "text/html;charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(body))
	case FaultHang:
		select {
		case <-r.Context().Done():
		case <-stop:
			dropConnection(w, true)
		}
	case FaultClose:
		dropConnection(w, false)
	case FaultReset:
		dropConnection(w, true)
	case FaultResetMidBody:
		writeRawThenDrop(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"+
			"Content-Length: "+strconv.Itoa(len(fullAnswer))+"\r\n\r\n"+fullAnswer[:len(fullAnswer)/3], false)
	case FaultGarbage:
		writeRawThenDrop(w, "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1 garbage \x00\xff\xfe not an HTTP response\r\n\r\n", false)
	default:
		return false
	}
	return true
}

// dropConnection hijacks the connection and closes it, with an RST when reset.
func dropConnection(w http.ResponseWriter, reset bool) {
	writeRawThenDrop(w, "", reset)
}

func writeRawThenDrop(w http.ResponseWriter, raw string, reset bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if raw != "" {
		_, _ = buf.WriteString(raw)
		_ = buf.Flush()
	}
	closeConn(conn, buf, reset)
}

func closeConn(conn net.Conn, _ *bufio.ReadWriter, reset bool) {
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
