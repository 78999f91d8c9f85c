package worker

import (
	"net/url"
	"strconv"
)

func uitoa(v uint64) string { return strconv.FormatUint(v, 10) }

func unescapePath(p string) (string, error) { return url.PathUnescape(p) }
