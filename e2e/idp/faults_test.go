package idp

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// freshClient uses a new connection for every request, so that a fault is seen as is (no
// retry on a reused connection).
func freshClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
}

func send(client *http.Client, p *IdP, form url.Values) (*http.Response, []byte, error) {
	resp, err := client.Post(p.TokenEndpoint(), "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestFaultLatency(t *testing.T) {
	p := start(t, nil)
	tok := mint(t, p, "alice")
	p.SetLatency(TokenExchangeOnly, 300*time.Millisecond)
	begin := time.Now()
	resp, body, err := send(freshClient(10*time.Second), p, exchangeForm(tok, APIClientID))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v %s", err, resp, body)
	}
	if elapsed := time.Since(begin); elapsed < 300*time.Millisecond {
		t.Errorf("answered after %v", elapsed)
	}
	// A client that gives up during the delay gets no answer, and the request was counted.
	p.SetLatency(AllGrants, time.Hour)
	p.ClearFault(TokenExchangeOnly)
	if _, _, err := send(freshClient(100*time.Millisecond), p, exchangeForm(tok, APIClientID)); err == nil {
		t.Error("answer during an hour of latency")
	}
	if got := p.TokenExchangeCount(); got != 2 {
		t.Errorf("exchange count %d", got)
	}
	p.SetLatency(AllGrants, 0)
	if resp, _, err := send(freshClient(5*time.Second), p, exchangeForm(tok, APIClientID)); err != nil || resp.StatusCode != 200 {
		t.Errorf("after clearing: %v", err)
	}
}

func TestFaultStatusAndBody(t *testing.T) {
	p := start(t, nil)
	tok := mint(t, p, "alice")
	client := freshClient(5 * time.Second)

	f := Respond(503, "<html>upstream connect error</html>")
	f.ContentType = "text/html"
	f.Header = http.Header{"Retry-After": {"1"}}
	p.SetFault(AllGrants, f)
	resp, body, err := send(client, p, exchangeForm(tok, APIClientID))
	if err != nil || resp.StatusCode != 503 || string(body) != "<html>upstream connect error</html>" ||
		resp.Header.Get("Content-Type") != "text/html" || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("503: %v %v %q", err, resp, body)
	}

	p.SetFault(AllGrants, RespondError(400, ErrInvalidGrant, "Token is not active"))
	resp, body, _ = send(client, p, exchangeForm(tok, APIClientID))
	var e errorBody
	if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || e.Error != ErrInvalidGrant || e.Description != "Token is not active" {
		t.Errorf("invalid_grant: %d %s", resp.StatusCode, body)
	}

	p.SetFault(AllGrants, Respond(429, ""))
	if resp, body, _ = send(client, p, exchangeForm(tok, APIClientID)); resp.StatusCode != 429 || len(body) != 0 {
		t.Errorf("429: %d %q", resp.StatusCode, body)
	}

	p.SetFault(AllGrants, Respond(200, `{"token_type":"Bearer"}`))
	if resp, body, _ = send(client, p, exchangeForm(tok, APIClientID)); resp.StatusCode != 200 || string(body) != `{"token_type":"Bearer"}` {
		t.Errorf("200 without access_token: %d %q", resp.StatusCode, body)
	}

	p.SetFault(AllGrants, NonJSON())
	resp, body, err = send(client, p, exchangeForm(tok, APIClientID))
	var anything any
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		json.Unmarshal(body, &anything) == nil {
		t.Errorf("non-JSON 200: %v %v %q", err, resp, body)
	}
}

func TestFaultConnectionModes(t *testing.T) {
	p := start(t, nil)
	tok := mint(t, p, "alice")
	client := freshClient(5 * time.Second)

	for _, f := range []Fault{CloseConnection(), ResetConnection(), Garbage()} {
		p.SetFault(TokenExchangeOnly, f)
		before := p.TokenExchangeCount()
		resp, _, err := send(client, p, exchangeForm(tok, APIClientID))
		if err == nil {
			t.Errorf("%v: got an answer %d", f.Kind, resp.StatusCode)
		}
		if got := p.TokenExchangeCount(); got != before+1 {
			t.Errorf("%v: %d requests reached the IdP, want 1 (a retry?)", f.Kind, got-before)
		}
		if f.Kind == FaultReset && err != nil && !errors.Is(err, syscall.ECONNRESET) && !strings.Contains(err.Error(), "EOF") {
			t.Logf("reset seen as: %v", err)
		}
	}

	// Reset mid-body: the status line and headers arrive, the body is cut.
	p.SetFault(TokenExchangeOnly, ResetMidBody())
	resp, err := client.Post(p.TokenEndpoint(), "application/x-www-form-urlencoded", strings.NewReader(exchangeForm(tok, APIClientID).Encode()))
	if err != nil {
		t.Fatalf("mid-body: headers did not arrive: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err == nil || !strings.HasPrefix(string(body), `{"access_token":"`) {
		t.Errorf("mid-body: status %d, read error %v, body %q", resp.StatusCode, err, body)
	}

	// Faults of one grant leave the other alone.
	if resp, _, err := send(client, p, clientCredentialsForm(FilterClientID, FilterClientSecret)); err != nil || resp.StatusCode != 200 {
		t.Errorf("client credentials during an exchange fault: %v", err)
	}
	p.ClearFaults()
	if resp, _, err := send(client, p, exchangeForm(tok, APIClientID)); err != nil || resp.StatusCode != 200 {
		t.Errorf("after ClearFaults: %v", err)
	}
}

func TestFaultHang(t *testing.T) {
	p := start(t, nil)
	p.SetFault(ClientCredentialsOnly, Hang())
	_, _, err := send(freshClient(200*time.Millisecond), p, clientCredentialsForm(FilterClientID, FilterClientSecret))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("want a client timeout, got %v", err)
	}
	if p.ClientCredentialsCount() != 1 {
		t.Errorf("count %d", p.ClientCredentialsCount())
	}

	// Stop releases a hanging request: the client sees the connection drop at once.
	done := make(chan error, 1)
	go func() {
		_, _, err := send(freshClient(time.Minute), p, clientCredentialsForm(FilterClientID, FilterClientSecret))
		done <- err
	}()
	if err := p.WaitForClientCredentials(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("hanging request answered")
		}
	case <-ctxT(t).Done():
		t.Fatal("hanging request not released by Stop")
	}
}

func TestFaultCountAndPrecedence(t *testing.T) {
	p := start(t, nil)
	tok := mint(t, p, "alice")
	client := freshClient(5 * time.Second)
	p.SetFault(AllGrants, Respond(500, "all"))
	p.SetFault(TokenExchangeOnly, Respond(502, "exchange").Times(2))

	var got []int
	for range 3 {
		resp, _, err := send(client, p, exchangeForm(tok, APIClientID))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.StatusCode)
	}
	if got[0] != 502 || got[1] != 502 || got[2] != 500 {
		t.Errorf("statuses %v, want [502 502 500]", got)
	}
	if resp, _, _ := send(client, p, clientCredentialsForm(FilterClientID, FilterClientSecret)); resp.StatusCode != 500 {
		t.Errorf("client credentials under the AllGrants fault: %d", resp.StatusCode)
	}
	if p.FaultsApplied() != 4 {
		t.Errorf("faults applied %d", p.FaultsApplied())
	}
	p.SetFault(AllGrants, Respond(503, "").Times(1).After(50*time.Millisecond))
	if resp, _, _ := send(client, p, clientCredentialsForm(FilterClientID, FilterClientSecret)); resp.StatusCode != 503 {
		t.Errorf("once: %d", resp.StatusCode)
	}
	if resp, _, _ := send(client, p, clientCredentialsForm(FilterClientID, FilterClientSecret)); resp.StatusCode != 200 {
		t.Errorf("after once: %d", resp.StatusCode)
	}
}

func TestCounters(t *testing.T) {
	p := start(t, nil)
	alice, bob := mint(t, p, "alice"), mint(t, p, "bob")
	ctx := ctxT(t)

	// Waiting starts before the requests.
	waited := make(chan error, 1)
	go func() { waited <- p.WaitForTokenExchangesFor(ctx, p.Subject("alice"), 10) }()

	var wg sync.WaitGroup
	for i := range 13 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := alice
			if i >= 10 {
				tok = bob
			}
			postForm(t, p, exchangeForm(tok, APIClientID), nil)
		}()
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			postForm(t, p, clientCredentialsForm(FilterClientID, FilterClientSecret), nil)
		}()
	}
	if err := p.WaitForTokenExchanges(ctx, 13); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitForClientCredentials(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	c := p.Counts()
	if c.TokenExchange != 13 || c.ClientCredentials != 2 || c.Password != 0 || c.Other != 0 || c.Total() != 15 {
		t.Errorf("counts %+v", c)
	}
	if p.TokenExchangeCountFor(p.Subject("alice")) != 10 || p.TokenExchangeCountFor(p.Subject("bob")) != 3 {
		t.Errorf("by subject %v", c.TokenExchangeBySubject)
	}
	if p.TokenExchangeCountForToken(alice) != 10 || p.TokenExchangeCountForToken(bob) != 3 {
		t.Errorf("by token: %d %d", p.TokenExchangeCountForToken(alice), p.TokenExchangeCountForToken(bob))
	}
	reqs := p.Requests()
	if len(reqs) != 15 {
		t.Fatalf("%d requests recorded", len(reqs))
	}
	for _, r := range reqs {
		if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || r.ClientID != FilterClientID || r.ClientAuth != "post" {
			t.Errorf("recorded %+v", r)
		}
		if r.Grant == GrantTokenExchange && (r.Form.Get("audience") != APIClientID || r.Form.Get("subject_token_type") != TokenTypeAccessToken) {
			t.Errorf("recorded form %v", r.Form)
		}
	}

	// A wait that cannot be satisfied ends with the context.
	short, cancel := contextWithTimeout(50 * time.Millisecond)
	defer cancel()
	if err := p.WaitForTokenExchanges(short, 100); err == nil {
		t.Error("wait for 100 exchanges returned nil")
	}
	p.ResetCounts()
	if c := p.Counts(); c.Total() != 0 || len(p.Requests()) != 0 {
		t.Errorf("after reset %+v", c)
	}
}

func TestStopAndRestart(t *testing.T) {
	p := start(t, nil)
	url0, port := p.TokenEndpoint(), p.Port()
	tok := mint(t, p, "alice")
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Error("running after Stop")
	}
	_, _, err := send(freshClient(5*time.Second), p, exchangeForm(tok, APIClientID))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("stopped IdP: want connection refused, got %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if p.TokenEndpoint() != url0 || p.Port() != port || !p.Running() {
		t.Errorf("restarted at %s", p.TokenEndpoint())
	}
	// Tokens issued before the restart still verify and exchange.
	resp, body, err := send(freshClient(5*time.Second), p, exchangeForm(tok, APIClientID))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after restart: %v %s", err, body)
	}
	if p.TokenExchangeCount() != 1 {
		t.Errorf("count %d (the refused attempt must not count)", p.TokenExchangeCount())
	}
	p.Close()
	if err := p.Restart(); err == nil {
		t.Error("Restart after Close")
	}
}

func TestFaultMix(t *testing.T) {
	p := start(t, nil)
	client := &http.Client{Timeout: 5 * time.Second}
	cc := clientCredentialsForm(FilterClientID, FilterClientSecret)
	status := func() int {
		t.Helper()
		resp, _, err := send(client, p, cc)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}

	// Certain draws: always the first choice; never any choice, and then not the AllGrants fault.
	p.SetFault(ClientCredentialsOnly, Mix(Chance{P: 1, Fault: Respond(502, "")}, Chance{P: 1, Fault: Respond(503, "")}))
	if got := status(); got != 502 {
		t.Errorf("P=1: %d", got)
	}
	p.SetFault(AllGrants, Respond(500, "all"))
	p.SetFault(ClientCredentialsOnly, Mix(Chance{P: 0, Fault: Respond(502, "")}))
	if got := status(); got != 200 {
		t.Errorf("P=0 under an AllGrants fault: %d, want a normal answer", got)
	}
	p.ClearFaults()
	before := p.FaultsApplied()

	// Shares: 30% 503, 20% 502 (a choice's own Count is ignored), the rest normal; Times counts
	// every matching request.
	const n = 200
	p.SetFault(ClientCredentialsOnly, Mix(
		Chance{P: 0.3, Fault: Respond(503, "")},
		Chance{P: 0.2, Fault: Respond(502, "").Times(1)}).Times(n))
	got := map[int]int{}
	for range n {
		got[status()]++
	}
	if got[503] < 30 || got[503] > 90 || got[502] < 15 || got[502] > 70 || got[200] < 60 || got[200] > 140 || len(got) != 3 {
		t.Errorf("statuses %v of %d requests, want about 60×503, 40×502, 100×200", got, n)
	}
	if applied := p.FaultsApplied() - before; applied != got[503]+got[502] {
		t.Errorf("FaultsApplied grew by %d, want %d", applied, got[503]+got[502])
	}
	if s := status(); s != 200 {
		t.Errorf("after Times(%d): %d", n, s)
	}
}
