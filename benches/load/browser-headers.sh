# Sourced by ab.sh and instructions.sh when BROWSER=1: the header fields a browser sends with a
# page request, as `-H` flags (wrk and h2load take the same), so each request's head is ~600
# bytes instead of a load tool's ~90. Work a proxy does per byte or per field of a head shows
# with them, and a real client's head looks like this.
header_flags=()
for field in \
  "user-agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36" \
  "accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8" \
  "accept-language: en-GB,en;q=0.9,de;q=0.8" \
  "accept-encoding: gzip, deflate, br, zstd" \
  "referer: https://app.example.com/dashboard/overview?tab=latency&range=24h" \
  "cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; consent=1" \
  "sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"" \
  "sec-fetch-mode: navigate"; do
  header_flags+=(-H "$field")
done
