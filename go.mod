module github.com/pelichan/pelichan

go 1.25

require (
	github.com/klauspost/compress v1.20.4
	github.com/tidwall/wal v1.2.1
	go.uber.org/goleak v1.3.0
)

require (
	github.com/tidwall/gjson v1.10.2 // indirect
	github.com/tidwall/match v1.1.1 // indirect
	github.com/tidwall/pretty v1.2.0 // indirect
	github.com/tidwall/tinylru v1.1.0 // indirect
)
