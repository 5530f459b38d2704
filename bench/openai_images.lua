-- wrk: POST /v1/images/generations (OpenAI shape) to Easel with the tenant key in EASEL_KEY; the
-- same body as the LiteLLM anchor's post_images.lua. Prints a RESULT line with percentiles.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("EASEL_KEY")
wrk.body = '{"model":"fake-image","prompt":"a watercolor painting of a lighthouse at dusk, volumetric light","n":1,"size":"1024x1024","response_format":"b64_json"}'
local non200 = 0
response = function(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout,
    summary.requests))
end
