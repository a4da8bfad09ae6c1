/* Run a model with one int64 input and one float output through ONNX Runtime's C API.
 *
 * Built with the aarch64 cross compiler against libonnxruntime.so from ORT's manylinux aarch64 wheel
 * (which ships no headers), so the OrtApi functions are called by their slot in the OrtApi table:
 * ORT only ever appends to that table, so these indices hold for every release since API version 1.
 *
 * usage: ort_run MODEL INPUT_NAME OUTPUT_NAME IDS.bin D0 D1 OUT.bin N_OUT
 *   IDS.bin: D0 x D1 int64 values; OUT.bin: the first N_OUT float32 values of the output.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef void* Status; /* OrtStatus*, NULL on success */
typedef struct {
  const void** (*GetApi)(uint32_t version);
  const char* (*GetVersionString)(void);
} ApiBase;
extern const ApiBase* OrtGetApiBase(void);

enum { GET_ERROR_MESSAGE = 2, CREATE_ENV = 3, CREATE_SESSION = 7, RUN = 9, CREATE_SESSION_OPTIONS = 10,
       CREATE_TENSOR_WITH_DATA = 49, GET_TENSOR_MUTABLE_DATA = 51, CREATE_CPU_MEMORY_INFO = 69 };
enum { LOG_WARNING = 2, ARENA_ALLOCATOR = 1, MEM_TYPE_DEFAULT = 0, ELEMENT_INT64 = 7 };

static const void** api;
#define CALL(slot, type) ((type)api[slot])

static void check(Status status, const char* what) {
  if (status) {
    fprintf(stderr, "%s failed: %s\n", what, CALL(GET_ERROR_MESSAGE, const char* (*)(Status))(status));
    exit(1);
  }
}

int main(int argc, char** argv) {
  if (argc != 9) {
    fprintf(stderr, "usage: %s MODEL INPUT_NAME OUTPUT_NAME IDS.bin D0 D1 OUT.bin N_OUT\n", argv[0]);
    return 2;
  }
  api = OrtGetApiBase()->GetApi(1);
  printf("onnxruntime %s\n", OrtGetApiBase()->GetVersionString());
  void *env, *options, *session, *memory, *input = NULL, *output = NULL;
  check(CALL(CREATE_ENV, Status (*)(int, const char*, void**))(LOG_WARNING, "prunec", &env), "CreateEnv");
  check(CALL(CREATE_SESSION_OPTIONS, Status (*)(void**))(&options), "CreateSessionOptions");
  check(CALL(CREATE_SESSION, Status (*)(void*, const char*, void*, void**))(env, argv[1], options, &session),
        "CreateSession");
  int64_t shape[2] = {atoll(argv[5]), atoll(argv[6])};
  size_t count = (size_t)(shape[0] * shape[1]);
  int64_t* ids = malloc(count * sizeof(int64_t));
  FILE* file = fopen(argv[4], "rb");
  if (!file || fread(ids, sizeof(int64_t), count, file) != count) {
    fprintf(stderr, "cannot read %zu int64 values from %s\n", count, argv[4]);
    return 1;
  }
  fclose(file);
  check(CALL(CREATE_CPU_MEMORY_INFO, Status (*)(int, int, void**))(ARENA_ALLOCATOR, MEM_TYPE_DEFAULT, &memory),
        "CreateCpuMemoryInfo");
  check(CALL(CREATE_TENSOR_WITH_DATA, Status (*)(void*, void*, size_t, const int64_t*, size_t, int, void**))(
            memory, ids, count * sizeof(int64_t), shape, 2, ELEMENT_INT64, &input), "CreateTensorWithDataAsOrtValue");
  const char* input_names[1] = {argv[2]};
  const char* output_names[1] = {argv[3]};
  check(CALL(RUN, Status (*)(void*, void*, const char* const*, void* const*, size_t, const char* const*, size_t,
                             void**))(session, NULL, input_names, (void* const*)&input, 1, output_names, 1, &output),
        "Run");
  float* values;
  check(CALL(GET_TENSOR_MUTABLE_DATA, Status (*)(void*, void**))(output, (void**)&values), "GetTensorMutableData");
  size_t wanted = (size_t)atoll(argv[8]);
  file = fopen(argv[7], "wb");
  if (!file || fwrite(values, sizeof(float), wanted, file) != wanted) return 1;
  fclose(file);
  printf("wrote %zu floats to %s\n", wanted, argv[7]);
  return 0;
}
