package config

// FieldError is one problem with one field. Field is the JSON path ("tokenExchange.audience"),
// or "" for the document as a whole (e.g. not JSON at all).
type FieldError struct {
	Field   string
	Problem string
}

func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Problem
	}
	return e.Field + ": " + e.Problem
}

// Errors is every problem found in one configuration, in document order.
// Error() joins them on one line ("; "), which is what the plugin logs.
type Errors []FieldError
