# The echo upstream of the compose stack (cmd/echo-upstream), built from this repository.
# The tag is the Go release go.mod names; the module cache is left behind in the build stage.
FROM docker.io/library/golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /echo-upstream ./cmd/echo-upstream

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /echo-upstream /echo-upstream
ENTRYPOINT ["/echo-upstream"]
