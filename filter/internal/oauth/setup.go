package oauth

// Keycloak answers some realm set-up mistakes with the same status and error code as a user's
// own problem (400 invalid_request, 403 access_denied), so they are told apart by their
// description. Each of these fails every user alike, so it is Class Configuration, and the log
// names the Keycloak setting to change. Texts from Keycloak's sources:
// StandardTokenExchangeProvider (audience not available, not enabled for the requested
// client), AbstractTokenExchangeProvider and the V1 provider (client not allowed to exchange),
// TokenEndpoint (realm not enabled, HTTPS required), and the audience check of
// TokenExchangeContext ("Audience not found", 400 invalid_client).
var setupErrors = []struct {
	match string // lower-case fragment of error_description
	hint  string
}{
	{"requested audience not available",
		"tokenExchange.audience is not an audience the filter's client gets: in Keycloak add an Audience mapper for it to the client's dedicated scope (Clients → the filter's client → Client scopes → dedicated → Add mapper), or leave tokenExchange.audience unset"},
	{notEnabledMatch,
		"turn on \"Standard token exchange\" in the filter's client (Clients → the filter's client → Settings → Capability config)"},
	{"client not allowed to exchange",
		"Keycloak answered with legacy token exchange (V1): turn on \"Standard token exchange\" in the filter's client (Capability config), Keycloak ≥ 26.2"},
	{"realm not enabled",
		"the realm is disabled: enable it (Realm settings → General → Enabled)"},
	{"https required",
		"the realm requires HTTPS for this caller: use an https tokenEndpoint, or set the realm's \"Require SSL\" to external requests (Realm settings → General)"},
	{"audience not found",
		"tokenExchange.audience names no client of the realm: create that client or fix the audience"},
}

// setupError reports whether an error description is one of Keycloak's set-up errors.
func setupError(rawDesc string) bool { return SetupHint(rawDesc) != "" }

// SetupHint is the Keycloak setting to change for a set-up error description, or "".
func SetupHint(desc string) string {
	for _, e := range setupErrors {
		if containsFold(desc, e.match) {
			return e.hint
		}
	}
	return ""
}
