package natsbus

import (
	"net/textproto"
	"strings"
)

// What Gust answers on NATS is chosen partly by whoever sent the message:
// its reply subject, and (through a JetStream push consumer whose deliver
// subject names one of Gust's subscriptions) even the subject it arrives
// with. nats-server lets an answer through on the reply subject of a
// message that reached the subscriber whatever the answerer's publish
// permissions say, deny lists included; so a reply subject of Gust's or
// JetStream's would let an outside publisher make Gust publish anywhere
// (delete a stream through $JS.API, put into a KV bucket). Gust therefore
// answers only on inboxes and unreserved subjects, drops messages that
// arrive with a subject of Gust's,
// JetStream's or the server's own, and strips the headers by which
// JetStream acts on a message (Nats-Rollup, Nats-Expected-*, ...) from what
// it sends back.

// answerableReply reports whether Gust may answer on reply: an inbox
// (_INBOX., a role's InboxPrefix), or any subject that is not reserved:
// publishing there is no more than an outside publisher may do itself
// (requesters with inbox prefixes of their own keep working). Gust's,
// JetStream's and the server's subjects are refused.
func answerableReply(reply string) bool {
	return strings.HasPrefix(reply, "_INBOX.") || strings.HasPrefix(reply, InboxPrefix+".") ||
		reply != "" && !reservedSubject(reply)
}

// roleReply reports whether reply is a role's inbox: the only replies the
// control plane's requests (Handle) come with.
func roleReply(reply string) bool { return strings.HasPrefix(reply, InboxPrefix+".") }

// reservedSubject reports whether s is a subject of Gust's, JetStream's
// or the server's own (reserved): no trigger message arrives on one.
func reservedSubject(s string) bool {
	for _, r := range reserved {
		if strings.HasPrefix(s, strings.TrimSuffix(r, ">")) {
			return true
		}
	}
	return false
}

// withoutNATSHeaders returns h without the headers NATS and JetStream
// act on (Nats-*), so that what a function answers cannot steer them.
func withoutNATSHeaders(h map[string][]string) map[string][]string {
	out := make(map[string][]string, len(h))
	for k, v := range h {
		if !strings.HasPrefix(textproto.CanonicalMIMEHeaderKey(k), "Nats-") {
			out[k] = v
		}
	}
	return out
}

// subjectMatches reports whether subject is one that pattern (with NATS
// wildcards: * one token, > the rest) subscribes to. A message that does
// not match arrived through a deliver subject (guard.go).
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}
