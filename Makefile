# Gust: two commands a new user needs are `make up` and `make test`.
GO      ?= go
BIN     ?= bin/gust
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
export CGO_ENABLED = 0

.PHONY: build up test test-faults test-postgres test-short bench bench-billing examples vet clean image compose-up compose-down

build: ## build the static gust binary
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/gust

up: build ## start Gust on this machine (gateway on :8080)
	./$(BIN) up

ACCEPTANCE ?= ../shared/acceptance

# The race detector needs cgo (and a C compiler): the tests turn it back on,
# the gust binary stays static.
test: ## run every test with the race detector, the Docker ones included, then the acceptance checks
	$(GO) vet ./...
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 45m ./...
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 5m ./testdata/functions/misbehave
	@if [ -d $(ACCEPTANCE) ]; then \
		for check in core metering events cluster cluster-faults hardening experience; do $(ACCEPTANCE)/$$check || exit 1; done; \
		scripts/acceptance-access $(ACCEPTANCE) || exit 1; \
	else echo "($(ACCEPTANCE) not found: acceptance checks skipped)"; fi

# Fault tests of our own (issue 10): a worker killed, a worker cut from
# the network, a NATS server killed, the leading scheduler killed, a
# gateway killed, a drain, each under load, with figures per fault.
test-faults: build ## the compose cluster under faults, with errors and recovery per fault (scripts/faults)
	scripts/faults

test-postgres: ## the PostgreSQL billing store's tests on a throwaway server (apt-get install postgresql)
	@eval "$$(scripts/postgres start)" && trap 'scripts/postgres stop "$$GUST_POSTGRES_DIR"' EXIT && \
		GUST_REQUIRE_DOCKER=1 $(GO) test -count=1 ./internal/postgres/... && \
		GUST_REQUIRE_DOCKER=1 $(GO) test -count=1 -run '^TestNoLossKillUpPostgres$$' ./cmd/gust

test-short: ## unit tests only: no Docker Engine needed, under a minute
	$(GO) test -count=1 -short ./...

# Every data-plane benchmark, each with its baseline measured in the same
# run; the test binary prints one table of every figure at the end. The
# billing store at 1M and 10M records takes an hour more: bench-billing.
bench: ## every data-plane benchmark against its baseline in the same run, ending with one table (the billing store: make bench-billing)
	$(GO) test ./cmd/gust -run '^$$' -bench . -benchtime 1x -count 1 -timeout 60m -v

BILLING_BENCH_RECORDS ?= 1000000,10000000
bench-billing: ## the billing store (inserts, reports, pages, lookups) at BILLING_BENCH_RECORDS records, against its baselines
	GUST_BILLING_BENCH_RECORDS=$(BILLING_BENCH_RECORDS) $(GO) test ./internal/sqlite -run '^TestBillingFigures$$' -count 1 -v -timeout 90m

image: build ## the gust image, FROM scratch, from the static binary
	docker build -q -t gust:local .

compose-up: image ## every role in its own container (docker-compose.yml)
	docker-compose up -d --remove-orphans

# docker-compose.yml requires GUST_ADMIN_PASSWORD and GUST_EVENTS_PASSWORD to
# interpolate the file, even to take the cluster down: any value does for that.
compose-down: ## stop the compose cluster; workers remove their containers first
	GUST_ADMIN_PASSWORD="$${GUST_ADMIN_PASSWORD:-unused}" GUST_EVENTS_PASSWORD="$${GUST_EVENTS_PASSWORD:-unused}" docker-compose down -v

examples: build ## build the example function images
	for f in hello echo sleep; do ./$(BIN) build examples/$$f --tag gust-example/$$f:latest; done

vet:
	$(GO) vet ./...
	gofmt -l .

clean:
	rm -rf bin
