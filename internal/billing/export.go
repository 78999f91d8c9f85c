package billing

import (
	"strconv"
	"time"

	"github.com/gustfaas/gust"
)

// CallColumns are the columns of a call record in CSV, in the order of
// CallCells: every field of gust.CallRecord, durations in nanoseconds and
// times in RFC 3339 with nanoseconds (UTC), for archives that a later
// import or a spreadsheet reads without loss.
var CallColumns = []string{
	"callId", "callerId", "namespace", "function", "version", "image", "worker", "instance", "trigger",
	"start", "end", "durationNs", "billedNs", "memoryMiB", "coldStart", "initNs", "status", "outcome",
	"bytesIn", "bytesOut",
}

// CallCells returns r's CSV cells, in the order of CallColumns.
func CallCells(r *gust.CallRecord) []string {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	return []string{
		r.CallID, r.CallerID, r.Namespace, r.Function, strconv.FormatUint(r.Version, 10), r.Image, r.Worker,
		r.Instance, r.Trigger, ts(r.Start), ts(r.End), i(r.DurationNs), i(r.BilledNs), i(r.MemoryMiB),
		strconv.FormatBool(r.ColdStart), i(r.InitNs), strconv.Itoa(r.Status), r.Outcome, i(r.BytesIn), i(r.BytesOut),
	}
}
