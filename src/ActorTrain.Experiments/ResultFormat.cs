using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace ActorTrain.Experiments;

/// <summary>
/// How result files write numbers. A diverged run has NaN and infinite losses: JSON has no literal
/// for them, so they are written as null (and read back as NaN); CSV writes nan, inf and -inf, which
/// pandas, numpy and spreadsheets read as the same values.
/// </summary>
public static class ResultFormat
{
    /// <summary>summary.json of runs and comparisons: snake_case keys, indented, non-finite numbers as null.</summary>
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        Converters = { new NonFiniteAsNull() },
    };

    /// <summary>A number for a CSV cell: <paramref name="format"/> for finite values, nan / inf / -inf otherwise.</summary>
    public static string Csv(double value, string format = "R") =>
        double.IsNaN(value) ? "nan" :
        double.IsPositiveInfinity(value) ? "inf" :
        double.IsNegativeInfinity(value) ? "-inf" :
        value.ToString(format, CultureInfo.InvariantCulture);

    private sealed class NonFiniteAsNull : JsonConverter<double>
    {
        public override bool HandleNull => true;

        public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            reader.TokenType == JsonTokenType.Null ? double.NaN : reader.GetDouble();

        public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options)
        {
            if (double.IsFinite(value)) writer.WriteNumberValue(value);
            else writer.WriteNullValue();
        }
    }
}
