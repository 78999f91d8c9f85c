package billing

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/gustfaas/gust"
)

// EncodeCursor makes the opaque cursor of a calls listing: "continue after
// the record that started at startNs with this call id". Every store
// writes the same cursor, so that a page asked of one gateway continues
// on another sharing the store.
func EncodeCursor(startNs int64, callID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(startNs, 10) + ":" + callID))
}

// DecodeCursor is the inverse of EncodeCursor. A cursor that does not
// decode is an EINVALID error on field "cursor".
func DecodeCursor(c string) (startNs int64, callID string, err error) {
	bad := gust.Invalidf("cursor", "cursor is not one this server returned")
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", bad
	}
	ns, id, ok := strings.Cut(string(b), ":")
	if !ok || id == "" {
		return 0, "", bad
	}
	startNs, err = strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return 0, "", bad
	}
	return startNs, id, nil
}
