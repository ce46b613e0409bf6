// The CUDA kernels: one sample per thread running thread_body.h (the shared headers' code
// with V = float), weights staged once per block in shared memory when they fit. Every CUDA
// call is checked; work goes on the caller's stream into the caller's buffers.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "api.h"
#include "launch_plan.h"

namespace fastscore {
namespace cuda {

namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}
#define FS_CUDA_CHECK(call) check((call), #call)

// The block's weights: copied once into dynamic shared memory when the launch asks for it,
// else the global copy. Every thread of the block must call it (it synchronises).
__device__ const float* block_weights(size_t n_params, const float* global, bool stage_shared) {
  extern __shared__ float shared[];
  if (!stage_shared) return global;
  stage_weights(global, shared, n_params, threadIdx.x, blockDim.x);
  __syncthreads();
  return shared;
}

__global__ void __launch_bounds__(kBlock, kMinBlocks) sample_kernel(SampleArgs a) {
  const float* w = block_weights(a.n_params, a.net.params, a.stage_shared);
  const int64_t i = thread_sample(blockIdx.x, threadIdx.x, blockDim.x);
  if (i < a.n) sample_thread(a, w, i);
}

__global__ void __launch_bounds__(kBlock, kMinBlocks) log_prob_kernel(LogProbArgs a, unsigned long long* failed) {
  const float* w = block_weights(a.n_params, a.net.params, a.stage_shared);
  const int64_t i = thread_sample(blockIdx.x, threadIdx.x, blockDim.x);
  if (i < a.n && log_prob_thread(a, w, i)) atomicAdd(failed, 1ull);
}

__global__ void __launch_bounds__(kBlock, kMinBlocks) adaptive_kernel(AdaptiveArgs a, unsigned long long* failed) {
  const float* w = block_weights(a.n_params, a.net.params, a.stage_shared);
  const int64_t i = thread_sample(blockIdx.x, threadIdx.x, blockDim.x);
  if (i < a.n && adaptive_thread(a, w, i)) atomicAdd(failed, 1ull);
}

// A device buffer freed in stream order when it goes out of scope.
template <class T>
struct StreamBuffer {
  StreamBuffer(size_t n, cudaStream_t s) : count(n), stream(s) {
    FS_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&ptr), (count ? count : 1) * sizeof(T), stream));
  }
  ~StreamBuffer() { cudaFreeAsync(ptr, stream); }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;
  // the buffer's whole extent from host memory
  void upload(const T* host) {
    FS_CUDA_CHECK(cudaMemcpyAsync(ptr, host, count * sizeof(T), cudaMemcpyHostToDevice, stream));
  }
  size_t count;
  T* ptr = nullptr;
  cudaStream_t stream;
};

// Shared-memory bytes for n_params floats on `device` (0: too many, read from global), after
// allowing the kernel that much dynamic shared memory.
template <class Kernel>
size_t shared_bytes_for(size_t n_params, int device, Kernel kernel) {
  int optin = 0;
  FS_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const size_t bytes = n_params * sizeof(float);
  if (bytes > (size_t)optin) return 0;
  FS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  return bytes;
}

// The network on the device: k-major params and the rows, uploaded on `stream`.
struct DeviceNet {
  DeviceNet(const Net& net, size_t n_params, cudaStream_t stream)
      : params(n_params, stream), ops((size_t)net.L.n_ops * kNetOpWidth, stream) {
    const std::vector<float> w = k_major_params(net, n_params);
    params.upload(w.data());
    ops.upload(net.ops);
    view = Net{net.L, ops.ptr, params.ptr};
  }
  StreamBuffer<float> params;
  StreamBuffer<int32_t> ops;
  Net view;
};

// cond [n, cond_dim] on the device (or null)
struct DeviceCond {
  DeviceCond(const double* cond, int64_t n, int cond_dim, cudaStream_t stream) : buf((size_t)n * cond_dim, stream) {
    if (cond_dim > 0) buf.upload(cond);
  }
  const double* ptr() const { return buf.count ? buf.ptr : nullptr; }
  StreamBuffer<double> buf;
};

// the kernels' count of samples whose adaptive solve gave up, zeroed on the stream
struct FailureCount {
  explicit FailureCount(cudaStream_t stream) : buf(1, stream) {
    FS_CUDA_CHECK(cudaMemsetAsync(buf.ptr, 0, sizeof(unsigned long long), stream));
  }
  unsigned long long* ptr() { return buf.ptr; }
  // the count once the stream's work is done
  int64_t wait(cudaStream_t stream) {
    unsigned long long host = 0;
    FS_CUDA_CHECK(cudaMemcpyAsync(&host, buf.ptr, sizeof host, cudaMemcpyDeviceToHost, stream));
    FS_CUDA_CHECK(cudaStreamSynchronize(stream));
    return (int64_t)host;
  }
  StreamBuffer<unsigned long long> buf;
};

unsigned grid_for(int64_t n) { return (unsigned)((n + kBlock - 1) / kBlock); }

}  // namespace

int device_count(std::string* reason) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    *reason = cudaGetErrorString(err);
    cudaGetLastError();  // reset the runtime's last-error state
    return 0;
  }
  if (count == 0) *reason = "no CUDA device";
  return count;
}

std::string device_name(int device) {
  cudaDeviceProp prop;
  FS_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

void sample(const Net& net, size_t n_params, const SamplePlan& plan, const double* cond, int64_t n, float* out,
            int device, uintptr_t stream_handle) {
  if (n == 0) return;
  FS_CUDA_CHECK(cudaSetDevice(device));
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const DeviceNet dnet(net, n_params, stream);
  const DeviceCond dcond(cond, n, net.L.cond_dim, stream);
  const size_t rows = (size_t)plan.steps * plan.n_slots + 1;
  StreamBuffer<float> coef((size_t)(plan.steps + 1) * plan.n_coefficients, stream), ttab(rows * net.L.n_texp, stream);
  StreamBuffer<int32_t> ops((size_t)plan.n_ops * kOpWidth, stream);
  ops.upload(plan.ops);
  coef.upload(plan.coef);
  if (ttab.count) ttab.upload(plan.ttab);
  SamplePlan device_plan = plan;
  device_plan.ops = ops.ptr;
  device_plan.coef = coef.ptr;
  device_plan.ttab = ttab.ptr;
  const size_t smem = shared_bytes_for(n_params, device, sample_kernel);
  const SampleArgs a{dnet.view, n_params, device_plan, dcond.ptr(), n, out, smem > 0};
  sample_kernel<<<grid_for(n), kBlock, smem, stream>>>(a);
  FS_CUDA_CHECK(cudaGetLastError());
}

int64_t log_prob(const Net& net, size_t n_params, const SdeParams& sde, const LogProbPlan& spec, const float* x,
                 const double* cond, int64_t n, double* logp, int64_t* nfe, int device, uintptr_t stream_handle) {
  if (n == 0) return 0;
  FS_CUDA_CHECK(cudaSetDevice(device));
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const DeviceNet dnet(net, n_params, stream);
  const DeviceCond dcond(cond, n, net.L.cond_dim, stream);
  FailureCount failed(stream);
  const size_t smem = shared_bytes_for(n_params, device, log_prob_kernel);
  const LogProbArgs a{dnet.view, n_params, sde, spec, x, dcond.ptr(), n, logp, nfe, smem > 0};
  log_prob_kernel<<<grid_for(n), kBlock, smem, stream>>>(a, failed.ptr());
  FS_CUDA_CHECK(cudaGetLastError());
  return failed.wait(stream);
}

int64_t sample_adaptive(const AdaptiveArgs& args, int device, uintptr_t stream_handle) {
  if (args.n == 0) return 0;
  FS_CUDA_CHECK(cudaSetDevice(device));
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const DeviceNet dnet(args.net, args.n_params, stream);
  const DeviceCond dcond(args.cond, args.n, args.net.L.cond_dim, stream);
  FailureCount failed(stream);
  AdaptiveArgs a = args;
  a.net = dnet.view;
  a.cond = dcond.ptr();
  const size_t smem = shared_bytes_for(a.n_params, device, adaptive_kernel);
  a.stage_shared = smem > 0;
  adaptive_kernel<<<grid_for(a.n), kBlock, smem, stream>>>(a, failed.ptr());
  FS_CUDA_CHECK(cudaGetLastError());
  return failed.wait(stream);
}

}  // namespace cuda
}  // namespace fastscore
