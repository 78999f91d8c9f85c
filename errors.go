// Package gust holds the domain types and service contracts of the Gust
// Function-as-a-Service platform. It imports no third-party packages; the
// roles (gateway, scheduler, worker) share only what is declared here and
// talk to each other over NATS and HTTP.
package gust

import (
	"errors"
	"fmt"
)

// Error codes. The gateway maps each to one HTTP status in one place.
const (
	ECONFLICT     = "conflict"
	EINTERNAL     = "internal"
	EINVALID      = "invalid"
	ENOTFOUND     = "not_found"
	EUNAUTHORIZED = "unauthorized"
	EUNAVAILABLE  = "unavailable"
	ETOOLARGE     = "too_large"
)

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
	ErrDraining = errors.New("draining")
)
