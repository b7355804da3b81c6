# ehrwatch — common tasks. `make test` is the project's test command.
.PHONY: test unit build demo bench fmt vet services-start services-stop

test: ## everything: real Kafka and ClickHouse engine, vet, gofmt, go test -race
	./deployments/dev/test.sh

unit: ## fast tests only (skips those needing Kafka/ClickHouse)
	go test -short -race ./...

build:
	go build -o bin/ehrwatch ./cmd/ehrwatch

demo:
	go run ./cmd/ehrwatch demo

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	go vet ./...

services-start: ## start the dev Kafka broker and ClickHouse engine; eval the printed env
	@./deployments/dev/kafka.sh start >/dev/null && ./deployments/dev/kafka.sh env
	@./deployments/dev/clickhouse.sh start >/dev/null && ./deployments/dev/clickhouse.sh env

services-stop:
	-./deployments/dev/kafka.sh stop
	-./deployments/dev/clickhouse.sh stop
