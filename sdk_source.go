package gust

import "embed"

// FunctionsSDK holds the Go files of the functions SDK (functions-sdk/,
// tests left out). The gust CLI writes them next to a function it
// scaffolds and points the function's go.mod at them with a replace, so a
// new function builds on a machine with no network and with the SDK of
// the gust that builds it.
//
//go:embed functions-sdk/sdk.go functions-sdk/event.go
var FunctionsSDK embed.FS
