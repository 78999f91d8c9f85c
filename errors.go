// Package gust holds the domain types and service contracts of the Gust
// Function-as-a-Service platform. It imports no third-party packages; the
// roles (gateway, scheduler, worker) share only what is declared here and
// talk to each other over NATS and HTTP.
package gust

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Error codes. Each maps to one HTTP status (HTTPStatus), on the
// management API and on the data plane alike.
const (
	ECONFLICT     = "conflict"
	EINTERNAL     = "internal"
	EINVALID      = "invalid"
	ENOTFOUND     = "not_found"
	EUNAUTHORIZED = "unauthorized"
	// EFORBIDDEN is a caller who is known but may not act there: a
	// namespace's key outside its namespace (403).
	EFORBIDDEN   = "forbidden"
	EUNAVAILABLE = "unavailable"
	ETOOLARGE    = "too_large"
	// EFUNCTION is a call whose function broke off or answered something
	// that is not HTTP (502).
	EFUNCTION = "function_failed"
	// ETIMEOUT is a call whose function did not answer within its
	// timeout (504).
	ETIMEOUT = "timeout"
	// ETOOMANY is a call past its namespace's quota.concurrency (429,
	// with Retry-After).
	ETOOMANY = "too_many_requests"
)

// statuses maps error codes to HTTP statuses: the one place this is
// decided, used by the gateway's API, the worker's listener and the
// gateway's client of both.
var statuses = map[string]int{
	ECONFLICT:     http.StatusConflict,
	EINVALID:      http.StatusBadRequest,
	ENOTFOUND:     http.StatusNotFound,
	EUNAUTHORIZED: http.StatusUnauthorized,
	EFORBIDDEN:    http.StatusForbidden,
	EUNAVAILABLE:  http.StatusServiceUnavailable,
	ETOOLARGE:     http.StatusRequestEntityTooLarge,
	EFUNCTION:     http.StatusBadGateway,
	ETIMEOUT:      http.StatusGatewayTimeout,
	ETOOMANY:      http.StatusTooManyRequests,
	EINTERNAL:     http.StatusInternalServerError,
}

// HTTPStatus returns the HTTP status that answers err.
func HTTPStatus(err error) int {
	if st, ok := statuses[ErrorCode(err)]; ok {
		return st
	}
	return http.StatusInternalServerError
}

// codeOfStatus returns the error code of an HTTP error status, for
// answers that carry none.
func codeOfStatus(status int) string {
	for code, st := range statuses {
		if st == status {
			return code
		}
	}
	if status >= 400 && status < 500 {
		return EINVALID
	}
	return EINTERNAL
}

// ErrorBody is the JSON shape of every error answer, of the gateway and of
// the worker.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	Field string `json:"field,omitempty"`
	// ID appears in the log next to an internal error, whose details the
	// caller does not get.
	ID string `json:"id,omitempty"`
}

// ErrorBodyOf returns the answer of err: its code, caller-safe message
// and field.
func ErrorBodyOf(err error) ErrorBody {
	return ErrorBody{Error: ErrorMessage(err), Code: ErrorCode(err), Field: ErrorField(err)}
}

// ErrorOfAnswer turns an error answer (an ErrorBody, or any other body)
// back into the *Error it was written from, so that an error crossing a
// hop is mapped to a status once, at the edge.
func ErrorOfAnswer(status int, body []byte) *Error {
	var eb ErrorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
		code := eb.Code
		if code == "" {
			code = codeOfStatus(status)
		}
		return &Error{Code: code, Field: eb.Field, Message: eb.Error}
	}
	msg := strings.TrimSpace(string(body))
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &Error{Code: codeOfStatus(status), Message: msg}
}

// Error is an application error: a machine code, a message that is safe to
// show to the caller, and, for invalid input, the field it concerns.
type Error struct {
	Code    string
	Field   string
	Message string
}

// Error implements the error interface.
func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("gust error: code=%s field=%s message=%s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("gust error: code=%s message=%s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalidf returns an EINVALID *Error that names the offending field.
func Invalidf(field, format string, args ...any) *Error {
	return &Error{Code: EINVALID, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, "" for nil
// and EINTERNAL for any other error.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the caller-safe message of err. Errors that are not
// *Error are internal and get a generic message.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrorField returns the field an EINVALID error names, or "".
func ErrorField(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrNotFound is returned by stores for a key that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned by stores when a create finds the key taken or
	// an update finds a newer revision.
	ErrConflict = errors.New("conflict")
	// ErrInstanceNotFound is returned by a Runtime for an unknown container.
	ErrInstanceNotFound = errors.New("instance not found")
	// ErrContainerExited is returned by Runtime.Start for a container that
	// exited as soon as it started.
	ErrContainerExited = errors.New("container exited")
	// ErrDraining is returned for calls that arrive while a worker drains.
	ErrDraining = &Error{Code: EUNAVAILABLE, Message: "worker is draining"}
)
